//! PostgreSQL for the outbox tests: uniquely named outbox tables on the shared server
//! (127.0.0.1:5432, database `test`), and a private cluster of the test's own (initdb/pg_ctl
//! as the postgres user, on a free port) for a test that stops the server.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::tools::{free_port, repo_path, run, text};

/// The shared server's test database.
pub const SHARED_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A client of `url`, its connection driven by a task of its own.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A table name no other test (or test run) uses.
pub fn unique_table() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "outbox_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// deploy/postgres/outbox.sql for the table `table`.
pub fn outbox_ddl(table: &str) -> String {
    std::fs::read_to_string(repo_path("deploy/postgres/outbox.sql"))
        .expect("deploy/postgres/outbox.sql")
        .replace("ssehub_outbox", table)
}

/// An outbox table made from the shipped DDL; [`Self::drop_table`] removes it.
pub struct OutboxTable {
    pub url: String,
    pub name: String,
    pub client: tokio_postgres::Client,
}

impl OutboxTable {
    /// Creates a fresh outbox table on the database at `url`.
    pub async fn create(url: &str) -> Self {
        let name = unique_table();
        let client = connect(url).await;
        client
            .batch_execute(&outbox_ddl(&name))
            .await
            .expect("the shipped DDL runs");
        Self {
            url: url.to_owned(),
            name,
            client,
        }
    }

    /// Inserts one committed row per `(id, data)` in one transaction, on topic `t`.
    pub async fn insert(&mut self, rows: &[(&str, &str)]) {
        let transaction = self.client.transaction().await.expect("begin");
        let sql = format!(
            "INSERT INTO {} (id, topics, data) VALUES ($1, ARRAY['t'], $2)",
            self.name
        );
        for (id, data) in rows {
            transaction
                .execute(&sql, &[id, data])
                .await
                .expect("insert");
        }
        transaction.commit().await.expect("commit");
    }

    /// Rows left in the table (`failed`: only those marked failed).
    pub async fn count(&self, failed: bool) -> i64 {
        let condition = if failed {
            "failed_at IS NOT NULL"
        } else {
            "true"
        };
        let sql = format!("SELECT count(*) FROM {} WHERE {condition}", self.name);
        self.client
            .query_one(&sql, &[])
            .await
            .expect("count")
            .get(0)
    }

    /// Drops the table and its trigger function.
    pub async fn drop_table(self) {
        let sql = format!(
            "DROP TABLE IF EXISTS {name}; DROP FUNCTION IF EXISTS {name}_notify();",
            name = self.name
        );
        self.client.batch_execute(&sql).await.expect("drop");
    }
}

/// A PostgreSQL cluster of the test's own, stopped and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args))
}

impl PrivatePostgres {
    /// `initdb` (trust, user postgres) in a fresh directory under /tmp, then starts it.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ssehub-pg-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let chown = run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        assert!(chown.status.success(), "{}", text(&chown));
        let data = dir.to_string_lossy().into_owned();
        let init = as_postgres(&[
            "initdb",
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        assert!(init.status.success(), "initdb: {}", text(&init));
        let server = Self {
            port: free_port(),
            dir,
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.data()
        );
        let log = format!("{}/server.log", self.data());
        let started = as_postgres(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &options,
            "-l",
            &log,
            "-w",
            "-t",
            "30",
            "start",
        ]);
        assert!(started.status.success(), "pg_ctl start: {}", text(&started));
    }

    /// Stops the cluster (fast: open sessions are ended), waiting for it.
    pub fn stop(&self) {
        let stopped = as_postgres(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(stopped.status.success(), "pg_ctl stop: {}", text(&stopped));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_ctl", "-D", &self.data()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
