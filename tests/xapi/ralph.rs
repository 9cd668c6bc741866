//! Ralph's LRS, run by the tests as a process of their own.

use std::path::PathBuf;

use learning_progress::xapi::lrs::LrsConfig;
use tokio::process::{Child, Command};

use super::*;

/// Ralph's LRS on a free loopback port, with its own statements file and credentials.
pub(crate) struct Ralph {
    pub(crate) base: String,
    dir: PathBuf,
    data: PathBuf,
    _child: Child,
}

impl Drop for Ralph {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Ralph {
    pub(crate) async fn start() -> Ralph {
        let output = std::process::Command::new("bash")
            .arg(repo().join("tests/xapi/setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/xapi/setup.sh");
        assert!(output.status.success(), "tests/xapi/setup.sh failed");
        let python = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let dir = std::env::temp_dir().join(format!("lp-ralph-{}", Uuid::new_v4().simple()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let env = [
            ("RALPH_RUNSERVER_BACKEND", "fs".to_owned()),
            ("RALPH_APP_DIR", dir.display().to_string()),
            (
                "RALPH_AUTH_FILE",
                dir.join("auth.json").display().to_string(),
            ),
            (
                "RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH",
                data.display().to_string(),
            ),
            ("RALPH_RUNSERVER_MAX_SEARCH_HITS_COUNT", "10000".to_owned()),
        ];
        let ralph = Path::new(&python).with_file_name("ralph");
        let auth = Command::new(&ralph)
            .args(["auth", "-u", USER, "-p", PASSWORD, "-s", "all", "-w"])
            .args(["-A", USER, "https://lrs.example"])
            .envs(env.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("ralph auth runs");
        assert!(auth.success(), "ralph auth failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .arg(repo().join("tests/xapi/ralph_lrs.py"))
            .args(["127.0.0.1", &port.to_string()])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ralph.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("Ralph's LRS starts");
        let base = format!("http://127.0.0.1:{port}");
        let heartbeat = format!("{base}/__heartbeat__");
        eventually(WAIT, "Ralph's LRS to answer", || async {
            let response = reqwest::get(&heartbeat).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        Ralph {
            base,
            dir,
            data,
            _child: child,
        }
    }

    pub(crate) fn lrs(&self, version: XapiVersion) -> LrsConfig {
        LrsConfig {
            lrs_url: format!("{}/xAPI", self.base),
            lrs_username: Some(USER.to_owned()),
            lrs_password: Some(PASSWORD.to_owned()),
            lrs_token: None,
            xapi_version: version,
            lrs_timeout_secs: 10,
        }
    }

    /// Every statement the LRS serves, read through its Statement Resource.
    pub(crate) async fn statements(&self) -> Vec<Value> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/xAPI/statements?limit=10000", self.base))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Experience-API-Version", "1.0.3")
            .send()
            .await
            .expect("Ralph answers")
            .json()
            .await
            .expect("a StatementResult");
        body["statements"].as_array().cloned().unwrap_or_default()
    }

    /// How many statements Ralph's file holds, duplicates included.
    pub(crate) fn stored(&self) -> usize {
        std::fs::read_to_string(self.data.join("fs_lrs.jsonl"))
            .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    }

    pub(crate) async fn post(&self, statement: &Value) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/xAPI/statements", self.base))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Experience-API-Version", "1.0.3")
            .json(&json!([statement]))
            .send()
            .await
            .expect("Ralph answers")
            .status()
    }
}
