//! A throwaway PostgreSQL cluster for tests: `initdb` in a fresh temporary
//! directory, `pg_ctl start` on 127.0.0.1 with a free port (and a unix
//! socket in that directory), a superuser `postgres` whose password the
//! URLs carry (`scram-sha-256` over TCP, trust on the socket the harness
//! itself uses).
//!
//! - [`shared`] and [`shared_tls`]: one cluster per test process each,
//!   started on first use; tests take a fresh database
//!   ([`Cluster::create_database`]) or a fresh schema ([`unique_name`]) so
//!   they run in parallel.
//! - [`Cluster::new`]: a private cluster, for tests that stop or crash it
//!   ([`Cluster::stop`], [`Cluster::crash`], [`Cluster::start`]) or freeze it
//!   ([`Cluster::freeze`], [`Cluster::thaw`]); dropped, it is stopped and
//!   removed.
//! - Every cluster has a watchdog: a `sh` in its own process group that
//!   waits for the end of a pipe from this process, then stops the cluster
//!   (`-m immediate`) and removes its directory. So nothing is left behind
//!   when the test process exits, panics or is killed, even for the shared
//!   clusters, which are never dropped.
//! - The server binaries are looked up under `/usr/lib/postgresql/*/bin`
//!   (the newest version), or in `HOOKGATE_TEST_PG_BIN`. Missing, every
//!   harness call fails with a message saying to install `postgresql`:
//!   a test never passes without a database.
//! - PostgreSQL refuses to run as root: when this process is root, the
//!   server commands run as the `postgres` user (`setpriv`), and the
//!   directory is theirs.

use std::fmt;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why the harness could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

fn err(message: impl Into<String>) -> HarnessError {
    HarnessError(message.into())
}

/// How to make a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    /// TLS only over TCP (`hostssl`; plain TCP is rejected), with a server
    /// certificate for `localhost` and `127.0.0.1` signed by a fresh CA
    /// ([`Cluster::ca_file`]).
    pub tls: bool,
}

/// A running (or stopped) throwaway cluster.
pub struct Cluster {
    base: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    /// uid, gid of `postgres` when this process is root.
    run_as: Option<(u32, u32)>,
    ca_file: Option<PathBuf>,
    /// Closing it (at drop or process exit) sets the watchdog off.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("base", &self.base)
            .field("port", &self.port)
            .field("tls", &self.ca_file.is_some())
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static SHARED_TLS: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The test process's plain cluster, started on first use.
///
/// # Panics
/// When the cluster cannot be started (PostgreSQL not installed, ...): the
/// calling test fails with the reason.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(|| Cluster::new(ClusterOptions::default()).unwrap_or_else(|e| panic!("{e}")))
}

/// The test process's TLS cluster ([`ClusterOptions::tls`]), started on
/// first use.
///
/// # Panics
/// As [`shared`].
pub fn shared_tls() -> &'static Cluster {
    SHARED_TLS.get_or_init(|| {
        Cluster::new(ClusterOptions { tls: true }).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A name unique in this process: `prefix` + `_` + a counter (lower case,
/// a valid unquoted identifier if `prefix` is).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PEM CA certificate that signed nothing the harness made (for "wrong
/// CA" tests).
pub fn unrelated_ca_pem() -> Result<String, HarnessError> {
    Ok(make_ca("hookgate unrelated test CA")?.0)
}

/// Where the server binaries are, or why not.
pub fn find_bin() -> Result<PathBuf, HarnessError> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("HOOKGATE_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_all(&dir) {
            Ok(dir)
        } else {
            Err(err(format!(
                "HOOKGATE_TEST_PG_BIN={} lacks initdb, pg_ctl, postgres or psql",
                dir.display()
            )))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        err(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found under \
             /usr/lib/postgresql/*/bin: the store's tests need a real PostgreSQL. Install the \
             `postgresql` package (apt-get install -y postgresql; .ci/run installs it), or set \
             HOOKGATE_TEST_PG_BIN to a directory holding them",
        )
    })
}

impl Cluster {
    /// Makes and starts a cluster in a fresh temporary directory.
    pub fn new(options: ClusterOptions) -> Result<Cluster, HarnessError> {
        let bin = find_bin()?;
        let run_as = if effective_uid()? == 0 {
            Some(postgres_user()?)
        } else {
            None
        };
        let base = std::env::temp_dir().join(unique_name("hookgate-pg"));
        std::fs::create_dir(&base)
            .map_err(|e| err(format!("cannot create {}: {e}", base.display())))?;
        let data = base.join("data");
        let socket_dir = base.join("sock");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let mut cluster = Cluster {
            base: base.clone(),
            data,
            socket_dir,
            bin,
            port: 0,
            password,
            run_as,
            ca_file: None,
            watchdog: Mutex::new(None),
        };
        // The watchdog first: whatever fails below, the directory goes.
        cluster.spawn_watchdog()?;
        std::fs::create_dir(&cluster.socket_dir).map_err(io_err("create the socket dir"))?;
        let pwfile = base.join("pwfile");
        std::fs::write(&pwfile, &cluster.password).map_err(io_err("write the password file"))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod the password file"))?;
        cluster.give(&base)?;
        cluster.give(&cluster.socket_dir)?;
        cluster.give(&pwfile)?;

        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb, "initdb")?;
        let _ = std::fs::remove_file(&pwfile);

        cluster.port = free_port()?;
        let mut conf = format!(
            "\n# hookgate test harness\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             password_encryption = 'scram-sha-256'\n",
            cluster.port,
            cluster.socket_dir.display()
        );
        let hba = if options.tls {
            let ca_file = cluster.write_tls_material()?;
            cluster.ca_file = Some(ca_file);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        };
        append(&cluster.data.join("postgresql.conf"), &conf)?;
        std::fs::write(cluster.data.join("pg_hba.conf"), hba)
            .map_err(io_err("write pg_hba.conf"))?;
        cluster.start()?;
        Ok(cluster)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser `postgres`'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA that signed the server certificate (TLS clusters only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The unix socket directory (for `psql -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// A libpq URL for `database` as the superuser, over TCP, with the
    /// password.
    pub fn url(&self, database: &str) -> String {
        self.url_for("postgres", &self.password, database)
    }

    /// A libpq URL for `database` as `user` with `password`, over TCP.
    pub fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a database with a fresh name and returns the name.
    pub fn create_database(&self) -> Result<String, HarnessError> {
        let name = unique_name("db");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Runs `sql` in `database` as the superuser over the unix socket
    /// (psql, stop at the first error); returns the unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, HarnessError> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ]);
        run(&mut psql, "psql")
    }

    /// Starts the (stopped) cluster on its port and waits until it accepts
    /// connections.
    pub fn start(&self) -> Result<(), HarnessError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.base.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(&mut pg_ctl, "pg_ctl start").map_err(|e| err(format!("{e}\n{}", self.log_tail())))?;
        Ok(())
    }

    /// Stops the cluster (`-m fast`: sessions are ended, as in a database
    /// restart or failover).
    pub fn stop(&self) -> Result<(), HarnessError> {
        self.stop_mode("fast")
    }

    /// Crashes the cluster (`-m immediate`: the server and its sessions
    /// quit at once, no shutdown checkpoint, as after a power cut or a
    /// `kill -9` of the server); the next [`Cluster::start`] recovers from
    /// the WAL, so only what was flushed to it survives.
    pub fn crash(&self) -> Result<(), HarnessError> {
        self.stop_mode("immediate")
    }

    /// `pg_ctl stop -m MODE`, waiting (bounded 60 s) until it is down.
    fn stop_mode(&self, mode: &str) -> Result<(), HarnessError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(&mut pg_ctl, &format!("pg_ctl stop -m {mode}")).map(drop)
    }

    /// Freezes the server and its sessions (SIGSTOP): connections stay
    /// open and nothing answers, as on a partition or a hung host.
    pub fn freeze(&self) -> Result<(), HarnessError> {
        self.signal("STOP")
    }

    /// Undoes [`Cluster::freeze`] (SIGCONT).
    pub fn thaw(&self) -> Result<(), HarnessError> {
        self.signal("CONT")
    }

    /// The end of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn signal(&self, signal: &str) -> Result<(), HarnessError> {
        let pids = self.pids()?;
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string));
        run(&mut kill, "kill")?;
        Ok(())
    }

    /// The postmaster and its children.
    fn pids(&self) -> Result<Vec<u32>, HarnessError> {
        let pidfile = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .map_err(io_err("read postmaster.pid (is the cluster running?)"))?;
        let postmaster: u32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| err("postmaster.pid has no pid"))?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")
            .map_err(io_err("read /proc"))?
            .flatten()
        {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// A command for a server binary, as `postgres` when this process is
    /// root, run from the cluster's directory.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir(&self.base);
        command
    }

    /// Hands a path to `postgres` (when root).
    fn give(&self, path: &Path) -> Result<(), HarnessError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| err(format!("cannot chown {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Writes a CA, and a server certificate and key signed by it, into the
    /// data directory; returns the CA file's path.
    fn write_tls_material(&self) -> Result<PathBuf, HarnessError> {
        let (ca_pem, issuer) = make_ca("hookgate test CA")?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(tls_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let key = rcgen::KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
        let crt = self.data.join("server.crt");
        let key_path = self.data.join("server.key");
        std::fs::write(&crt, cert.pem()).map_err(io_err("write server.crt"))?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(io_err("write server.key"))?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod server.key"))?;
        self.give(&crt)?;
        self.give(&key_path)?;
        let ca_file = self.base.join("ca.crt");
        std::fs::write(&ca_file, ca_pem).map_err(io_err("write ca.crt"))?;
        Ok(ca_file)
    }

    /// The watchdog: `sh` in its own process group (a Ctrl-C to the test
    /// run does not reach it) reading a pipe from this process; at its end
    /// it wakes a frozen server, stops it and removes the directory.
    fn spawn_watchdog(&self) -> Result<(), HarnessError> {
        let script = r#"
trap '' INT HUP TERM PIPE
cat >/dev/null
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
    kill -CONT "$pid" 2>/dev/null
    pkill -CONT -P "$pid" 2>/dev/null
    if [ -n "$4" ]; then
        setpriv --reuid="$4" --regid="$5" --init-groups -- "$3/pg_ctl" -D "$2" -m immediate -w -t 20 stop >/dev/null 2>&1
    else
        "$3/pg_ctl" -D "$2" -m immediate -w -t 20 stop >/dev/null 2>&1
    fi
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"#;
        let (uid, gid) = self
            .run_as
            .map_or((String::new(), String::new()), |(u, g)| {
                (u.to_string(), g.to_string())
            });
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("hookgate-pg-watchdog")
            .arg(&self.base)
            .arg(&self.data)
            .arg(&self.bin)
            .arg(uid)
            .arg(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .current_dir("/")
            .spawn()
            .map_err(|e| err(format!("cannot start the cluster's watchdog (sh): {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| err("the watchdog has no stdin"))?;
        if let Ok(mut slot) = self.watchdog.lock() {
            *slot = Some((child, stdin));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The watchdog does the work (thaw, stop, remove); wait for it, so
        // the cluster is gone when the test ends.
        let taken = self.watchdog.get_mut().ok().and_then(Option::take);
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A fresh CA: its PEM certificate, and the issuer that signs with it.
fn make_ca(name: &str) -> Result<(String, rcgen::Issuer<'static, rcgen::KeyPair>), HarnessError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let pem = params.self_signed(&key).map_err(tls_err)?.pem();
    Ok((pem, rcgen::Issuer::new(params, key)))
}

fn tls_err(e: rcgen::Error) -> HarnessError {
    err(format!("cannot make the test certificates: {e}"))
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> HarnessError {
    move |e| err(format!("cannot {what}: {e}"))
}

/// Runs a command to completion; its output, or an error with its stderr.
fn run(command: &mut Command, what: &str) -> Result<String, HarnessError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        )))
    }
}

fn append(path: &Path, text: &str) -> Result<(), HarnessError> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// A port free on 127.0.0.1 right now (bound, read back, released).
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("read the bound port"))?
        .port();
    Ok(port)
}

/// This process's effective uid (the owner of `/proc/self`).
fn effective_uid() -> Result<u32, HarnessError> {
    Ok(std::fs::metadata("/proc/self")
        .map_err(io_err("read /proc/self"))?
        .uid())
}

/// The `postgres` user's uid and gid, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), HarnessError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_err("read /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == "postgres").then_some(())?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .ok_or_else(|| {
            err(
                "running as root, and there is no `postgres` user to run the server as \
                 (PostgreSQL refuses root): install the `postgresql` package, which creates it",
            )
        })
}
