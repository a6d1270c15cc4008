//! A real PostgreSQL for the tests and the benchmark: Debian's server binaries, a cluster made
//! with `initdb` in a temporary directory (as the `postgres` user when running as root),
//! listening on a free loopback port and a private unix socket, stopped and removed when the
//! guard drops. Missing binaries skip the caller, except under CI
//! (`capture_test_support::running_in_ci`), where they fail it (`cargo xtask test` installs the
//! `postgresql` package).

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The role the collector connects as: not a superuser, so row-level security applies to it.
pub const APP_ROLE: &str = "capture";
pub const APP_PASSWORD: &str = "capture-test-password";

pub struct Postgres {
    base: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    sock: PathBuf,
    data: PathBuf,
    as_postgres: bool,
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

impl Postgres {
    /// A fresh cluster, or `None` (after saying why) when PostgreSQL is not installed and this
    /// is not CI.
    pub fn start(fsync: bool) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            if capture_test_support::running_in_ci() {
                panic!(
                    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); \
                     `cargo xtask test` installs it (apt-get install postgresql)"
                );
            }
            eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let as_postgres = nix::unistd::geteuid().is_root();
        let base = tempfile::Builder::new()
            .prefix("capture-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = base.path().join("data");
        let sock = base.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("the postgres user (made by the postgresql package)");
            for dir in [&data, &sock] {
                nix::unistd::chown(dir.as_path(), Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        // TLS for clients that ask for it (`sslmode=verify-full&sslrootcert=…`): a CA and a
        // certificate for localhost and 127.0.0.1, the key readable by the server only.
        let generated = capture_collector::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(sock.join("server.crt"), &generated.identity.cert_pem).unwrap();
        std::fs::write(sock.join("server.key"), &generated.identity.key_pem).unwrap();
        std::fs::set_permissions(
            sock.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(base.path().join("ca.pem"), &generated.ca_pem).unwrap();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            for file in ["server.crt", "server.key"] {
                nix::unistd::chown(&sock.join(file), Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            base,
            bin,
            port,
            sock,
            data,
            as_postgres,
        };
        pg.check(
            pg.command("initdb")
                .arg("-D")
                .arg(&pg.data)
                .args([
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .output()
                .unwrap(),
            "initdb",
        );
        let log = pg.sock.join("server.log");
        let options = format!(
            "-k {sock} -p {} -h 127.0.0.1 -c fsync={} -c max_connections=200 -c ssl=on \
             -c ssl_cert_file={sock}/server.crt -c ssl_key_file={sock}/server.key",
            pg.port,
            if fsync { "on" } else { "off" },
            sock = pg.sock.display(),
        );
        let started = pg
            .command("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .unwrap();
        if !started.status.success() {
            panic!(
                "pg_ctl start: {}\n{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"),
        );
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn check(&self, out: Output, what: &str) -> String {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `sql` in `db` as the superuser, over the unix socket; returns unaligned rows.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .unwrap();
        self.check(out, sql)
    }

    /// Runs `statements` in one session in `db` as the collector's role over TCP; the output,
    /// or the error text.
    pub fn psql_as_app(&self, db: &str, statements: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", APP_ROLE, "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt"])
            .args(statements.iter().flat_map(|s| ["-c", s]))
            .env("PGPASSWORD", APP_PASSWORD)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A new database owned by the collector's role; its URL (the password is not in it).
    pub fn database(&self, name: &str) -> String {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {APP_ROLE}"),
        );
        format!("postgres://{APP_ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// A 0600 file holding the collector role's password.
    pub fn password_file(&self) -> PathBuf {
        let path = self.base.path().join("password");
        std::fs::write(&path, format!("{APP_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `pg_dump` of `db` (plain SQL, data included), as the superuser.
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let out = self
            .command("pg_dump")
            .arg("-h")
            .arg(&self.sock)
            .args(["-p", &self.port.to_string(), "-U", "postgres", db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The CA that signed the server's certificate (for `sslrootcert`).
    pub fn ca(&self) -> PathBuf {
        self.base.path().join("ca.pem")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
