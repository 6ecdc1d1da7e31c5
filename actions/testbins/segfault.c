/* Dies of a real SIGSEGV: the action contract's exit code 139 is tested
 * with it (a shell cannot stand in: as PID 1 it ignores kill -SEGV $$). */
int main(void) {
    volatile int *nowhere = 0;
    return *nowhere;
}
