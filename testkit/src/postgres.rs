//! A throwaway PostgreSQL server from the local binaries.
//!
//! Every connection needs a password (scram-sha-256, TCP and socket alike):
//! with `trust`, any local user would be superuser, and a superuser can run
//! programs through `COPY ... TO PROGRAM`. The password is random, made at
//! initdb, and kept in `password` (0600) beside the data directory, so a
//! kept cluster (a local environment's) opens again after a restart.
//!
//! initdb and postgres refuse to run as root, so when we are root they run as
//! the `postgres` system user (set on the child process, no `su`), and the
//! directory they write is handed to that user.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use crate::{
    error::{Context, Error, Result, bail},
    process::{ServiceDir, find_tool, log_tail, terminate, try_free_port, try_spawn_logged, try_wait_until, try_which},
};

const INSTALL_HINT: &str =
    "install PostgreSQL server binaries (Debian: `apt-get install postgresql`), or set DATABASE_URL";

/// How to start the server. `Default` gives a fresh cluster in a temp dir on
/// a free loopback port.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Keep the cluster here instead of a temp dir; an existing cluster is
    /// reused, so data survives restarts.
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    /// `listen_addresses`; defaults to 127.0.0.1. A container that must reach
    /// the host's server needs the docker bridge address or `*`.
    pub listen_addresses: Option<String>,
    /// Serve TLS with this certificate and key, and refuse TCP connections
    /// without it (`hostssl` only), as RDS does with `rds.force_ssl = 1`.
    pub tls: Option<TlsFiles>,
}

/// A server certificate (PEM, with its chain) and its key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    port: u16,
    password: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Set by `detach`: the server outlives this handle.
    detached: bool,
    // Owns the temp dir (if any); declared last so it is removed after stop.
    _dir: Option<ServiceDir>,
}

/// A server left running by `Postgres::detach`: it outlives this process,
/// and whoever holds its pid stops it with `stop_postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedPostgres {
    pub pid: u32,
    pub port: u16,
    pub password: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl Postgres {
    /// Starts a fresh server; panics with a clear message when it cannot.
    pub fn start() -> Postgres {
        Postgres::start_with(PostgresOptions::default())
    }

    pub fn start_with(options: PostgresOptions) -> Postgres {
        Postgres::try_start_with(options).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `start_with` for a caller that is not a test: the failure is
    /// returned, not a panic. A temp directory is kept for inspection then,
    /// as a failing test keeps it, and the error names it.
    pub fn try_start_with(options: PostgresOptions) -> Result<Postgres> {
        let (dir, base) = match &options.data_dir {
            Some(data_dir) => {
                let base = data_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
                fs::create_dir_all(&base).context(|| format!("creating {}", data_dir.display()))?;
                (None, base)
            }
            None => {
                let dir = ServiceDir::try_new("testkit-postgres")?;
                let base = dir.path().to_path_buf();
                (Some(dir), base)
            }
        };
        match Postgres::start_in(&options, &base) {
            Ok(mut postgres) => {
                postgres._dir = dir;
                Ok(postgres)
            }
            Err(err) => match dir {
                Some(mut dir) => {
                    dir.keep();
                    Err(Error::new(format!("{err}\n(kept {} for inspection)", dir.path().display())))
                }
                None => Err(err),
            },
        }
    }

    /// Starts a server with its files under `base` (the data directory is
    /// `options.data_dir`, or `base/data`).
    fn start_in(options: &PostgresOptions, base: &Path) -> Result<Postgres> {
        let initdb = find_pg_binary("initdb")?;
        let postgres = find_pg_binary("postgres")?;
        let run_as = if crate::process::running_as_root() { Some(postgres_user()?) } else { None };

        let data_dir = options.data_dir.clone().unwrap_or_else(|| base.join("data"));
        let socket_dir = base.join("socket");
        fs::create_dir_all(&socket_dir).context(|| format!("creating {}", socket_dir.display()))?;
        let log_path = base.join("postgres.log");
        let password_path = password_file(&data_dir);
        let fresh = !data_dir.join("PG_VERSION").exists();
        // A cluster made before passwords (trust) gets one on this start.
        let upgrade_from_trust = !fresh && !password_path.exists();
        let password = match fs::read_to_string(&password_path) {
            Ok(text) if !fresh => text.trim().to_owned(),
            _ => write_new_password(&password_path, run_as)?,
        };
        if let Some((uid, gid)) = run_as {
            for path in [base, &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .context(|| format!("handing {} to the postgres user", path.display()))?;
            }
            let _ = fs::File::create(&log_path);
            let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
        }

        if fresh {
            let mut command = Command::new(&initdb);
            command.arg("--pgdata").arg(&data_dir).arg(format!("--pwfile={}", password_path.display())).args([
                "--username=postgres",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ]);
            as_user(&mut command, run_as);
            let output = command.output().context(|| format!("running {}", initdb.display()))?;
            if !output.status.success() {
                bail!(
                    "initdb failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }

        let mut tls_settings = Vec::new();
        if let Some(tls) = &options.tls {
            // The server reads them as its own user; the key must be 0600.
            for (source, name) in [(&tls.certificate, "server.crt"), (&tls.key, "server.key")] {
                let target = base.join(name);
                fs::copy(source, &target).context(|| format!("copying {}", source.display()))?;
                fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .context(|| format!("chmod {}", target.display()))?;
                if let Some((uid, gid)) = run_as {
                    let _ = std::os::unix::fs::chown(&target, Some(uid), Some(gid));
                }
                tls_settings.push(format!(
                    "ssl_{}_file={}",
                    if name == "server.crt" { "cert" } else { "key" },
                    target.display()
                ));
            }
            tls_settings.push("ssl=on".to_owned());
            let hba_path = data_dir.join("pg_hba.conf");
            let hba = fs::read_to_string(&hba_path).context(|| format!("reading {}", hba_path.display()))?;
            let ssl_only: Vec<String> = hba
                .lines()
                .map(|line| match line.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}"),
                    None => line.to_owned(),
                })
                .collect();
            fs::write(&hba_path, ssl_only.join("\n") + "\n").context(|| format!("writing {}", hba_path.display()))?;
        }

        let port = match options.port {
            Some(port) => port,
            None => try_free_port()?,
        };
        let listen = options.listen_addresses.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        let mut command = Command::new(&postgres);
        command
            .arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .arg("-c")
            .arg(format!("listen_addresses={listen}"))
            // Durability is worthless for a throwaway server and costs seconds.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        for setting in &tls_settings {
            command.arg("-c").arg(setting);
        }
        as_user(&mut command, run_as);
        let mut child = try_spawn_logged(command, &log_path)?;
        try_wait_until("postgres", &mut child, &log_path, Duration::from_secs(30), || {
            fs::read_to_string(&log_path).is_ok_and(|log| log.contains("ready to accept connections"))
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        // From here on the handle owns the server: a failure stops it.
        let postgres = Postgres { child, port, password, data_dir, log_path, detached: false, _dir: None };
        if upgrade_from_trust {
            postgres.require_password()?;
        }
        Ok(postgres)
    }

    /// Sets the password on a cluster made with `trust`, then makes its
    /// pg_hba.conf ask for it and reloads.
    fn require_password(&self) -> Result<()> {
        self.psql_as("postgres", &format!("ALTER ROLE postgres PASSWORD '{}'", self.password), false)?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).context(|| format!("reading {}", hba_path.display()))?;
        let scram: String = hba
            .lines()
            .map(|line| {
                if line.trim_start().starts_with('#') {
                    line.to_owned()
                } else {
                    line.replace(" trust", " scram-sha-256")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&hba_path, scram + "\n").context(|| format!("writing {}", hba_path.display()))?;
        self.try_psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// The superuser's password (also in the URLs).
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Server process id (the postmaster).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, database: &str) -> String {
        database_url("127.0.0.1", self.port, &self.password, database)
    }

    /// Runs SQL through `psql` and returns its output; panics on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `psql`, returning the failure.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String> {
        self.psql_as(database, sql, true)
    }

    fn psql_as(&self, database: &str, sql: &str, with_password: bool) -> Result<String> {
        let psql = find_pg_binary("psql")?;
        let mut command = Command::new(&psql);
        // The password through the environment of psql only, never its
        // command line (which `ps` shows).
        if with_password {
            command.env("PGPASSWORD", &self.password);
        } else {
            command.env_remove("PGPASSWORD");
        }
        let output = command
            .args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .arg("-c")
            .arg(sql)
            .output()
            .context(|| "running psql".to_owned())?;
        if !output.status.success() {
            bail!("psql {sql:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.try_create_database(name).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `create_database`, returning the failure.
    pub fn try_create_database(&self, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database name {name:?} must be [A-Za-z0-9_]");
        }
        self.try_psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url_for(name))
    }

    /// Stops the server now (fast shutdown) instead of at drop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Leaves the server running when this handle goes away, for a server
    /// that must survive the process that started it (a local environment's
    /// database). Its directory is kept too, even a temp one.
    pub fn detach(mut self) -> DetachedPostgres {
        self.detached = true;
        if let Some(dir) = &mut self._dir {
            dir.keep();
        }
        DetachedPostgres {
            pid: self.child.id(),
            port: self.port,
            password: self.password.clone(),
            data_dir: self.data_dir.clone(),
            log_path: self.log_path.clone(),
        }
    }

    fn shutdown(&mut self) {
        if self.detached {
            return;
        }
        // SIGINT is PostgreSQL's "fast" shutdown: it disconnects clients
        // instead of waiting for them the way SIGTERM ("smart") would.
        if let Ok(None) = self.child.try_wait() {
            crate::process::send_signal(self.child.id(), "INT");
        }
        terminate(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("testkit: postgres log {}:\n{}", self.log_path.display(), log_tail(&self.log_path));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Stops a server by the pid of its postmaster (a detached one, or one found
/// in `postmaster.pid`): SIGINT, PostgreSQL's fast shutdown, then SIGKILL
/// after `grace`. True once it is gone; a pid that is not running is fine.
pub fn stop_postgres(pid: u32, grace: Duration) -> bool {
    let running = || {
        // A zombie (a server this process started and has not reaped) has
        // stopped as far as anyone can tell.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    let wait = |timeout: Duration| {
        let deadline = std::time::Instant::now() + timeout;
        while running() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };
    if !running() {
        return true;
    }
    crate::process::send_signal(pid, "INT");
    if wait(grace) {
        return true;
    }
    crate::process::send_signal(pid, "KILL");
    wait(Duration::from_secs(5))
}

/// `postgres://postgres:PASSWORD@HOST:PORT/DATABASE`. The password is hex
/// (see `write_new_password`), so it needs no percent-encoding.
pub fn database_url(host: &str, port: u16, password: &str, database: &str) -> String {
    format!("postgres://postgres:{password}@{host}:{port}/{database}")
}

/// Where the password of the cluster in `data_dir` is kept: beside it.
pub fn password_file(data_dir: &Path) -> PathBuf {
    data_dir.parent().unwrap_or(Path::new("/")).join("password")
}

/// 32 random hex characters from the kernel.
pub fn random_password() -> String {
    try_random_password().unwrap_or_else(|err| panic!("{err}"))
}

fn try_random_password() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context(|| "reading /dev/urandom".to_owned())?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A new `random_password`, written 0600 (owned by the
/// server's user when it runs as another, since initdb reads the file).
fn write_new_password(path: &Path, run_as: Option<(u32, u32)>) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let password = try_random_password()?;
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{password}\n").as_bytes())
        .context(|| format!("writing {}", path.display()))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .context(|| format!("handing {} to the postgres user", path.display()))?;
    }
    Ok(password)
}

fn find_pg_binary(name: &str) -> Result<PathBuf> {
    // Debian keeps the server binaries out of PATH.
    let mut versioned: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    versioned.sort();
    versioned.reverse();
    match try_which(name, &versioned) {
        Some(path) => Ok(path),
        None => find_tool(name, INSTALL_HINT),
    }
}

fn postgres_user() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let output =
            Command::new("id").args([flag, "postgres"]).output().context(|| format!("running `id {flag} postgres`"))?;
        String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|_| {
            Error::new(format!("running as root, and there is no `postgres` user to run PostgreSQL as: {INSTALL_HINT}"))
        })
    };
    Ok((id("-u")?, id("-g")?))
}

fn as_user(command: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid).env_remove("HOME");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let postgres = Postgres::start();
        let url = postgres.create_database("testkit_smoke");
        assert!(url.ends_with("/testkit_smoke"));
        assert_eq!(postgres.psql("testkit_smoke", "SELECT 40 + 2"), "42");
        let data_dir = postgres.data_dir().to_path_buf();
        let pid = postgres.pid();
        postgres.stop();
        assert!(!data_dir.exists(), "temp dir {} was not removed", data_dir.display());
        let alive = Command::new("kill").args(["-0", &pid.to_string()]).status().unwrap().success();
        assert!(!alive, "postgres pid {pid} still runs after stop");
    }

    /// `SELECT 1` as postgres with no password from anywhere (no
    /// PGPASSWORD, no ~/.pgpass, never a prompt).
    fn psql_without_password(host: &str, port: u16) -> std::process::Output {
        Command::new(find_pg_binary("psql").unwrap())
            .args(["-X", "-w", "-h", host, "-U", "postgres", "-p", &port.to_string(), "-c", "SELECT 1"])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", "/nonexistent")
            .output()
            .unwrap()
    }

    #[test]
    fn every_connection_needs_the_password_kept_0600() {
        use std::os::unix::fs::PermissionsExt;
        let postgres = Postgres::start();
        let password_path = password_file(postgres.data_dir());
        let mode = fs::metadata(&password_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&password_path).unwrap().trim(), postgres.password());
        assert_eq!(postgres.password().len(), 32);
        assert!(postgres.url().contains(&format!(":{}@", postgres.password())));
        // Without it, over TCP and over the socket, the server says no.
        let socket_dir = postgres.data_dir().parent().unwrap().join("socket");
        for host in ["127.0.0.1".to_owned(), socket_dir.display().to_string()] {
            let output = psql_without_password(&host, postgres.port());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "connected to {host} without a password");
            assert!(stderr.contains("password"), "{host}: {stderr}");
        }
        let hba = fs::read_to_string(postgres.data_dir().join("pg_hba.conf")).unwrap();
        let methods: Vec<&str> =
            hba.lines().filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty()).collect();
        assert!(methods.iter().all(|line| line.ends_with("scram-sha-256")), "{methods:?}");
    }

    #[test]
    fn a_cluster_made_with_trust_gets_a_password_on_its_next_start() {
        let dir = ServiceDir::new("testkit-trust-upgrade");
        let data_dir = dir.path().join("data");
        let options = PostgresOptions { data_dir: Some(data_dir.clone()), ..Default::default() };
        let postgres = Postgres::start_with(options.clone());
        postgres.psql("postgres", "CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)");
        let old_password = postgres.password().to_owned();
        postgres.stop();
        // What an older testkit left: pg_hba.conf with trust, no password file.
        let hba_path = data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).unwrap().replace(" scram-sha-256", " trust");
        fs::write(&hba_path, hba).unwrap();
        fs::remove_file(password_file(&data_dir)).unwrap();

        let again = Postgres::start_with(options);
        assert_ne!(again.password(), old_password);
        assert_eq!(fs::read_to_string(password_file(&data_dir)).unwrap().trim(), again.password());
        assert_eq!(again.psql("postgres", "SELECT value FROM kept"), "7");
        assert!(!fs::read_to_string(&hba_path).unwrap().lines().any(|line| line.ends_with(" trust")));
        let output = psql_without_password("127.0.0.1", again.port());
        assert!(!output.status.success(), "connected without a password after the upgrade");
    }

    #[test]
    fn a_server_that_cannot_start_is_an_error_and_its_directory_is_kept() {
        let first = Postgres::start();
        let taken = PostgresOptions { port: Some(first.port()), ..Default::default() };
        let err = Postgres::try_start_with(taken).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("postgres exited with"), "{message}");
        let kept = message.rsplit_once("(kept ").and_then(|(_, rest)| rest.strip_suffix(" for inspection)"));
        let kept = kept.unwrap_or_else(|| panic!("the error names no kept directory: {message}"));
        assert!(Path::new(kept).join("postgres.log").exists(), "{message}");
        fs::remove_dir_all(kept).unwrap();

        let not_a_directory = ServiceDir::new("testkit-not-a-directory");
        let file = not_a_directory.path().join("file");
        fs::write(&file, "").unwrap();
        let options = PostgresOptions { data_dir: Some(file.join("postgres/data")), ..Default::default() };
        let err = Postgres::try_start_with(options).unwrap_err();
        assert!(err.message().starts_with(&format!("creating {}", file.join("postgres/data").display())), "{err}");
    }

    #[test]
    fn a_detached_server_outlives_its_handle_and_keeps_its_data() {
        let dir = ServiceDir::new("testkit-detached");
        let data_dir = dir.path().join("data");
        let options = PostgresOptions { data_dir: Some(data_dir.clone()), ..Default::default() };
        let postgres = Postgres::start_with(options.clone());
        postgres.psql("postgres", "CREATE TABLE kept (value int); INSERT INTO kept VALUES (42)");
        let detached = postgres.detach();
        assert!(std::net::TcpStream::connect(("127.0.0.1", detached.port)).is_ok(), "the server stopped on detach");
        assert!(stop_postgres(detached.pid, Duration::from_secs(10)));
        assert!(std::net::TcpStream::connect(("127.0.0.1", detached.port)).is_err());
        let again = Postgres::start_with(PostgresOptions { port: Some(detached.port), ..options });
        assert_eq!(again.psql("postgres", "SELECT value FROM kept"), "42");
        assert!(stop_postgres(again.pid(), Duration::from_secs(10)));
        assert!(stop_postgres(999_999_999, Duration::from_secs(1)), "a pid that is gone counts as stopped");
    }
}

#[cfg(test)]
mod database_url_tests {
    use super::*;

    /// `cargo xtask test-local` hands its throwaway server to the tests as
    /// DATABASE_URL; this checks the server it hands over answers. Without
    /// DATABASE_URL it checks a server of its own. `TESTKIT_HOLD_SECONDS`
    /// keeps the test running so the interrupt tests of test-local can
    /// press Ctrl-C while the server is in use.
    #[test]
    fn database_url_is_reachable() {
        let own_server;
        let url = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                own_server = Postgres::start();
                own_server.url()
            }
        };
        let host_port = url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("DATABASE_URL {url:?} has no host:port"));
        std::net::TcpStream::connect(host_port).unwrap_or_else(|err| panic!("connecting to {host_port}: {err}"));
        let hold: u64 = std::env::var("TESTKIT_HOLD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if hold > 0 {
            eprintln!("holding the database for {hold}s");
            std::thread::sleep(Duration::from_secs(hold));
        }
    }
}
