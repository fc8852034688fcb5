//! The real `easel` binary as a server process.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `easel` on a data dir, without the caller's own EASEL_* settings; when the suite runs on
/// PostgreSQL, also on the data dir's own database (created on first use and remembered in the
/// dir, so that a restart finds it).
pub async fn easel_on(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.arg("--data-dir").arg(data_dir).current_dir(data_dir);
    for var in
        ["EASEL_CONFIG", "EASEL_DATABASE_URL", "EASEL_STORAGE_URL", "EASEL_PUBLIC_URL", "EASEL_LISTEN", "EASEL_ROLE"]
    {
        cmd.env_remove(var);
    }
    let remembered = data_dir.join("test-database-url");
    let database = match std::fs::read_to_string(&remembered) {
        Ok(url) => Some(url),
        Err(_) => super::fresh_database_url().await,
    };
    if let Some(url) = database {
        std::fs::write(&remembered, &url).unwrap();
        cmd.env("EASEL_DATABASE_URL", url);
    }
    cmd
}

/// A running `easel serve`.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// What it printed before it listened (the bootstrap key, for one).
    pub printed: Vec<String>,
}

/// Runs `cmd serve --listen 127.0.0.1:0` and waits (up to 30 s) until it says where it listens.
/// The process is killed when the returned child is dropped.
pub async fn serve(cmd: Command) -> Served {
    serve_at(cmd, "127.0.0.1:0", Stdio::null()).await
}

/// [`serve`] on a given address (for a server restarted where its clients already point), with
/// its log (stderr) sent to `log`.
pub async fn serve_at(mut cmd: Command, listen: &str, log: Stdio) -> Served {
    let mut child = cmd
        .args(["serve", "--listen", listen])
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("easel starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (base, printed) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Easel listening on ") {
                return (url.to_owned(), printed);
            }
            printed.push(line);
        }
        panic!("the server exited before listening; it printed {printed:?}");
    })
    .await
    .expect("the server listens within 30 s");
    Served { child, base, printed }
}
