//! A private PostgreSQL for tests: `initdb` into a temporary directory,
//! `pg_ctl start` on a free loopback port, one database per test, stopped
//! (`pg_ctl stop -m immediate`) when the last user drops it.
//!
//! Used by the server's store tests (dev-dependency) and by the integration
//! tests here. The binaries come from `KILN_PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql-15`, which
//! scripts/test-env.sh installs). PostgreSQL refuses to run as root, so as
//! root the server runs as the `postgres` user the package creates.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result, bail};

/// A running PostgreSQL server, stopped when dropped.
pub struct PgServer {
    bin: PathBuf,
    /// Holds the data directory; removed after the server stopped.
    dir: tempfile::TempDir,
    /// Run the server's commands as this user (when we are root).
    user: Option<String>,
    pub port: u16,
    databases: AtomicU32,
}

impl PgServer {
    /// One server shared by the tests of this process that run at the same
    /// time: each gets its own database, and the server stops when the last
    /// of them drops its handle (statics are never dropped, so a plain
    /// global would leave postgres running after the tests).
    pub fn shared() -> Result<Arc<PgServer>> {
        static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// A new server of its own (fsync off: test data need not survive a
    /// crash of the machine).
    pub fn start() -> Result<Self> {
        Self::start_with_fsync(false)
    }

    /// A new server of its own that flushes its WAL on commit, like a
    /// production one (for benchmarks).
    pub fn start_durable() -> Result<Self> {
        Self::start_with_fsync(true)
    }

    fn start_with_fsync(fsync: bool) -> Result<Self> {
        let bin = pg_bin()?;
        let user = if is_root() { Some(unprivileged_user()?) } else { None };
        let dir = tempfile::Builder::new().prefix("kiln-pg").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        if let Some(user) = &user {
            run(Command::new("chown").arg("-R").arg(user).arg(dir.path()), "chown the PostgreSQL directory")?;
        }
        let mut server = Self { bin, dir, user, port: 0, databases: AtomicU32::new(0) };
        // --no-sync: a test database needs no fsync of its initial files.
        server.pg(
            "initdb",
            &["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        )?;
        // A free port can be taken by someone else before postgres binds
        // it: try a few.
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            let opts = format!(
                "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
                data.display(),
                server.port,
                if fsync { "on" } else { "off" }
            );
            let log = server.dir.path().join("postgres.log");
            match server.pg(
                "pg_ctl",
                &["start", "-w", "-t", "30", "-D", &data.to_string_lossy(), "-l", &log.to_string_lossy(), "-o", &opts],
            ) {
                Ok(_) => return Ok(server),
                Err(e) => last = Some(e.context(std::fs::read_to_string(&log).unwrap_or_default())),
            }
        }
        Err(last.expect("at least one start attempt"))
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("kiln_test_{}_{n}", std::process::id());
        self.pg("createdb", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name])?;
        Ok(self.url(&name))
    }

    /// URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let program = self.bin.join(tool);
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        // The tools must not inherit a PGDATABASE/PGHOST of the caller, and
        // run from a directory the user can read.
        cmd.args(args).env_remove("PGHOST").env_remove("PGDATABASE").current_dir(self.dir.path());
        run(&mut cmd, tool)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.pg("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", &data.to_string_lossy()]);
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Where `initdb` and `pg_ctl` are.
fn pg_bin() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("KILN_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL found in /usr/lib/postgresql/*/bin: install postgresql-15 (scripts/test-env.sh does) \
             or set KILN_PG_BIN"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The user postgres runs as when we are root.
fn unprivileged_user() -> Result<String> {
    let user = std::env::var("KILN_PG_USER").unwrap_or_else(|_| "postgres".into());
    let exists = Command::new("id").arg("-u").arg(&user).output().is_ok_and(|o| o.status.success());
    if !exists {
        bail!(
            "PostgreSQL cannot run as root and user {user:?} does not exist: install postgresql-15 (it creates \
             `postgres`) or set KILN_PG_USER"
        );
    }
    Ok(user)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
