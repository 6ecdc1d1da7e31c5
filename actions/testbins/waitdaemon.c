/* A stand-in for Tinkerbell's community waitdaemon action
 * (ghcr.io/jacobweinstock/waitdaemon), which we cannot pull: it tests that
 * the waitdaemon pattern works under kiln unchanged. Like the original:
 *
 * - first fork (PHASE unset): find this container through the Docker
 *   socket by the hostname (`GET /containers/$(hostname)/json`), create and
 *   start a detached copy of it (same image, Cmd, Env plus
 *   PHASE=SECOND_FORK, Binds, PidMode, Privileged), exit 0 at once;
 * - second fork: wait WAIT_TIME seconds (default 10), pull IMAGE, find itself again
 *   by its hostname, and start IMAGE with its own Cmd, Env, Binds, PidMode
 *   and Privileged: the template's `command` runs in IMAGE.
 *
 * The engine is /var/run/docker.sock (the template binds it in), spoken to
 * with HTTP/1.0 (the answer then ends at EOF, never chunked). Static, so
 * the image needs nothing else. Exit codes as the original's: 1 first
 * fork failed, 2 second fork failed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_PATH "/var/run/docker.sock"
#define API "/v1.41"

static char *response; /* the last answer, headers and body */

/* One request; returns the HTTP status, the answer in `response`. */
static int request(const char *method, const char *path, const char *body) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, SOCKET_PATH, sizeof addr.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "waitdaemon: cannot connect to %s: %s\n", SOCKET_PATH, strerror(errno));
        return -1;
    }
    size_t body_len = body ? strlen(body) : 0;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s " API "%s HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, body_len);
    if (write(fd, head, n) != n || (body_len && write(fd, body, body_len) != (ssize_t)body_len)) {
        fprintf(stderr, "waitdaemon: writing the request failed\n");
        close(fd);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    free(response);
    response = malloc(cap);
    ssize_t got;
    while ((got = read(fd, response + len, cap - len - 1)) > 0) {
        len += got;
        if (cap - len < 1024) response = realloc(response, cap *= 2);
    }
    response[len] = 0;
    close(fd);
    int status = 0;
    sscanf(response, "HTTP/%*s %d", &status);
    return status;
}

static const char *body_of(const char *answer) {
    const char *b = strstr(answer, "\r\n\r\n");
    return b ? b + 4 : answer;
}

/* The JSON value that follows `"key":` after `from`, copied whole (a
 * string with its quotes, an array, an object, a literal). */
static char *value_of(const char *from, const char *key) {
    char needle[128];
    snprintf(needle, sizeof needle, "\"%s\":", key);
    const char *p = strstr(from, needle);
    if (!p) return NULL;
    p += strlen(needle);
    const char *q = p;
    int depth = 0, in_string = 0;
    for (; *q; q++) {
        if (in_string) {
            if (*q == '\\') q++;
            else if (*q == '"') {
                in_string = 0;
                if (depth == 0) { q++; break; }
            }
        } else if (*q == '"') in_string = 1;
        else if (*q == '[' || *q == '{') depth++;
        else if (*q == ']' || *q == '}') {
            if (depth == 0) break;
            if (--depth == 0) { q++; break; }
        } else if (*q == ',' && depth == 0) break;
    }
    return strndup(p, q - p);
}

/* Finds this container by its hostname: its inspect answer's body. */
static char *find_myself(void) {
    char hostname[256] = {0}, path[512];
    gethostname(hostname, sizeof hostname - 1);
    snprintf(path, sizeof path, "/containers/%s/json", hostname);
    int status = request("GET", path, NULL);
    if (status != 200) {
        fprintf(stderr, "waitdaemon: no container named by my hostname %s (HTTP %d): %s\n", hostname, status,
                response ? body_of(response) : "");
        return NULL;
    }
    printf("waitdaemon: found my container by my hostname %s\n", hostname);
    return strdup(body_of(response));
}

/* Creates and starts a container like `self` from `image`, its Env with
 * `extra_env` added; detached: nothing waits for it. */
static int run_like(const char *self, const char *image, const char *extra_env) {
    const char *config = strstr(self, "\"Config\":{");
    const char *host = strstr(self, "\"HostConfig\":{");
    if (!config || !host) return fprintf(stderr, "waitdaemon: unexpected inspect answer\n"), -1;
    char *cmd = value_of(config, "Cmd"), *env = value_of(config, "Env");
    char *binds = value_of(host, "Binds"), *pid = value_of(host, "PidMode"), *priv = value_of(host, "Privileged");
    if (!cmd || !env || !binds || !pid || !priv) return fprintf(stderr, "waitdaemon: fields missing\n"), -1;
    /* Env is ["A=1",...] or null: add one more. */
    char *new_env = malloc(strlen(env) + strlen(extra_env) + 8);
    if (strcmp(env, "null") == 0 || strcmp(env, "[]") == 0) sprintf(new_env, "[\"%s\"]", extra_env);
    else sprintf(new_env, "%.*s,\"%s\"]", (int)strlen(env) - 1, env, extra_env);
    size_t size = strlen(image) + strlen(cmd) + strlen(new_env) + strlen(binds) + strlen(pid) + 256;
    char *body = malloc(size);
    snprintf(body, size,
             "{\"Image\":\"%s\",\"Cmd\":%s,\"Env\":%s,\"HostConfig\":{\"Binds\":%s,\"PidMode\":%s,\"Privileged\":%s}}",
             image, cmd, new_env, binds, pid, priv);
    int status = request("POST", "/containers/create", body);
    if (status != 201) return fprintf(stderr, "waitdaemon: create failed (HTTP %d): %s\n", status, body_of(response)), -1;
    char *id = value_of(body_of(response), "Id");
    if (!id || strlen(id) < 3) return fprintf(stderr, "waitdaemon: no id in %s\n", body_of(response)), -1;
    id[strlen(id) - 1] = 0; /* drop the quotes */
    char path[256];
    snprintf(path, sizeof path, "/containers/%s/start", id + 1);
    status = request("POST", path, NULL);
    if (status != 204) return fprintf(stderr, "waitdaemon: start failed (HTTP %d): %s\n", status, body_of(response)), -1;
    printf("waitdaemon: started %s from %s\n", id + 1, image);
    return 0;
}

int main(void) {
    const char *phase = getenv("PHASE");
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!phase || strcmp(phase, "SECOND_FORK") != 0) {
        char *self = find_myself();
        if (!self) return 1;
        char *image = value_of(strstr(self, "\"Config\":{"), "Image");
        if (!image || strlen(image) < 3) return 1;
        image[strlen(image) - 1] = 0;
        if (run_like(self, image + 1, "PHASE=SECOND_FORK") != 0) return 1;
        printf("waitdaemon: first fork done; exiting 0\n");
        return 0;
    }
    const char *wait = getenv("WAIT_TIME");
    sleep(wait && *wait ? atoi(wait) : 10);
    const char *image = getenv("IMAGE");
    if (!image || !*image) return fprintf(stderr, "waitdaemon: IMAGE is not set\n"), 2;
    char pull[512];
    snprintf(pull, sizeof pull, "/images/create?fromImage=%s", image);
    int status = request("POST", pull, NULL);
    if (status != 200 || strstr(body_of(response), "\"error\"")) {
        fprintf(stderr, "waitdaemon: pulling %s failed (HTTP %d): %s\n", image, status, body_of(response));
        return 2;
    }
    char *self = find_myself();
    if (!self) return 2;
    return run_like(self, image, "WAITDAEMON_SECOND_FORK_DONE=1") == 0 ? 0 : 2;
}
