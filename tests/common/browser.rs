//! A real headless Chromium, driven over the W3C WebDriver protocol through
//! Debian's chromedriver, for the console's tests. The protocol is a handful of
//! JSON calls over HTTP, made here with the suite's own HTTP client. Chromium
//! starts with the flags that keep it from reaching out (no background networking,
//! component updates or sync), in a new profile folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser at a time in a test binary: two cores run one Chromium well.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let turn = ONE_AT_A_TIME.lock().await;
        let port = super::load::free_port();
        let driver = Command::new(
            std::env::var("HALLGATE_CHROMEDRIVER")
                .unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
        )
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver) starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = hallgate::tls::http_client().build().expect("client");
        let started = Instant::now();
        while client.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("HALLGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--lang=zh-CN",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let bytes = client
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .expect("new session")
            .bytes()
            .await
            .expect("session answer");
        let r: Value = serde_json::from_slice(&bytes).expect("session JSON");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            _turn: turn,
            driver,
            base,
            session,
            client,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let bytes = req
            .send()
            .await
            .expect("webdriver")
            .bytes()
            .await
            .expect("answer");
        let r: Value = serde_json::from_slice(&bytes).expect("webdriver JSON");
        r["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    pub async fn must(&self, css: &str) -> String {
        self.find(css)
            .await
            .unwrap_or_else(|| panic!("no `{css}` on the page"))
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.must(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.must(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.must(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Accept the confirmation dialog the page opened, once it is open.
    pub async fn accept_dialog(&self) {
        let started = Instant::now();
        loop {
            let v = self
                .call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                .await;
            if v.is_null() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no dialog opened: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Wait until the page's source contains `text` (a form's answer may come a
    /// moment after the click); the source.
    pub async fn wait_for(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let page = self.source().await;
            if page.contains(text) {
                return page;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "`{text}` never appeared: {page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A cookie's value, HttpOnly ones included.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self
            .call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await;
        v["value"].as_str().map(str::to_string)
    }

    /// Every URL the page has loaded (its document and each resource).
    pub async fn loaded_urls(&self) -> Vec<String> {
        let v = self
            .script("return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));")
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    }

    /// Save a PNG of the page.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("screenshot");
    }
}

impl Browser {
    /// End the session (Chromium exits), then chromedriver.
    pub async fn quit(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.client.delete(url).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
