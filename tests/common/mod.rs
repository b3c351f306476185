//! Shared test harness: real receivers on loopback, a real gateway on 127.0.0.1:0
//! with an SQLite file in a temporary folder, and a real HTTP client.
#![allow(dead_code)]

pub mod browser;
pub mod gm;
pub mod load;
pub mod pg;
pub mod qzk;

use std::path::Path;
use std::time::{Duration, Instant};

use hallgate::config::Config;
use hallgate::gateway::{self, Running};
use hallgate::receiver::Receiver;
use serde_json::{Value, json};

/// Senders `district-a` (350205) and `district-b` (330122); destinations `city`,
/// `province`, `supervision`; routes: everything to the city, applications and
/// results to the province, results to supervision.
pub const DEFAULT_ROUTES: &str = r#"
[[routes]]
name = "all-to-city"
to = ["city"]

[[routes]]
name = "apps-and-results-to-province"
kinds = ["application", "result"]
to = ["province"]

[[routes]]
name = "results-to-supervision"
kinds = ["result"]
to = ["supervision"]
"#;

pub fn config_text(
    store: &Path,
    city: &str,
    province: &str,
    supervision: &str,
    routes: &str,
) -> String {
    format!(
        r#"
[gateway]
id = "gw-test"
listen = "127.0.0.1:0"
store = "sqlite://{store}"
trust_node_header = true
shutdown_grace_seconds = 10

[limits]
max_body_bytes = 65536
max_records_per_body = 100

[delivery]
lease_seconds = 30
base_backoff_ms = 40
max_backoff_ms = 400
max_attempts = 50
poll_ms = 50

[nodes.district-a]
name = "海沧区"
level = "district"
region = "350205"
accept = {{ kinds = ["application", "material", "process", "result"], regions = ["350205"] }}

[nodes.district-b]
name = "桐庐县"
level = "district"
region = "330122"
accept = {{ kinds = ["application", "material"], regions = ["330122"] }}

[nodes.city]
name = "市级平台"
level = "city"
destination = {{ url = "{city}", timeout_ms = 5000, concurrency = 4 }}

[nodes.province]
name = "省网上办事大厅"
level = "province"
destination = {{ url = "{province}", timeout_ms = 5000, concurrency = 4 }}

[nodes.supervision]
name = "电子监察"
level = "department"
destination = {{ url = "{supervision}", timeout_ms = 5000, concurrency = 2 }}
{routes}
"#,
        store = store.display()
    )
}

/// Three receivers and a gateway routed to them.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub city: Receiver,
    pub province: Receiver,
    pub supervision: Receiver,
    pub gateway: Option<Running>,
    pub url: String,
    pub client: reqwest::Client,
    routes: String,
    edit: fn(String) -> String,
    /// Supervision's clock, when a test moves it.
    pub clock: Option<hallgate::time::Clock>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_routes(DEFAULT_ROUTES).await
    }

    pub async fn with_routes(routes: &str) -> Harness {
        Harness::with_config(routes, |t| t).await
    }

    /// With an edit applied to the generated config text.
    pub async fn with_config(routes: &str, edit: fn(String) -> String) -> Harness {
        Harness::with_setup(routes, edit, |_| {}).await
    }

    /// With an edit, and files made in the config's folder before the gateway starts.
    pub async fn with_setup(routes: &str, edit: fn(String) -> String, setup: fn(&Path)) -> Harness {
        Harness::with_clock(routes, edit, setup, None).await
    }

    /// …and supervision reading `clock`.
    pub async fn with_clock(
        routes: &str,
        edit: fn(String) -> String,
        setup: fn(&Path),
        clock: Option<hallgate::time::Clock>,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        // ES256 key pairs for the two senders, for tests that configure tokens.
        for node in ["district-a", "district-b"] {
            let key = dir.path().join(format!("keys/{node}.key.pem"));
            hallgate::keys::generate_key(&key).expect("key pair");
        }
        // The gateway's own signing key, where the config looks for it by default.
        hallgate::keys::generate_key(&dir.path().join("certs/gateway-signing.key.pem"))
            .expect("gateway key");
        setup(dir.path());
        let city = Receiver::start("city", "127.0.0.1:0")
            .await
            .expect("receiver");
        let province = Receiver::start("province", "127.0.0.1:0")
            .await
            .expect("receiver");
        let supervision = Receiver::start("supervision", "127.0.0.1:0")
            .await
            .expect("receiver");
        let mut h = Harness {
            dir,
            city,
            province,
            supervision,
            gateway: None,
            url: String::new(),
            client: hallgate::tls::http_client().build().expect("client"),
            routes: routes.to_string(),
            edit,
            clock,
        };
        h.start_gateway().await;
        h
    }

    pub fn config(&self) -> Config {
        let text = (self.edit)(config_text(
            &self.dir.path().join("hallgate.db"),
            &self.city.url(),
            &self.province.url(),
            &self.supervision.url(),
            &self.routes,
        ));
        let path = self.dir.path().join("hallgate.toml");
        std::fs::write(&path, &text).expect("write config");
        let mut config = Config::load(&path).expect("test config is valid");
        if let Some(c) = &self.clock {
            config.supervision.clock = c.clone();
        }
        config
    }

    /// (Re)start the gateway on the same data.
    pub async fn start_gateway(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = gateway::start(self.config(), Some(listener))
            .await
            .expect("gateway starts");
        self.url = running.url();
        self.gateway = Some(running);
    }

    pub async fn stop_gateway(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }

    pub fn running(&self) -> &Running {
        self.gateway.as_ref().expect("gateway running")
    }

    /// POST canonical records as `node`; returns status, headers and JSON body.
    pub async fn post(
        &self,
        node: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/records", self.url))
            .header("content-type", "application/json")
            .header("x-hallgate-node", node)
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POST a body to `/v1/records` with these headers; returns status and JSON body.
    pub async fn post_with(
        &self,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/records", self.url))
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// One number from the SQLite store (`SELECT count(*) …`).
    pub fn count(&self, sql: &str) -> i64 {
        rusqlite::Connection::open(self.dir.path().join("hallgate.db"))
            .expect("open the store")
            .query_row(sql, [], |r| r.get(0))
            .expect("query")
    }

    /// POST any body to a full URL, optionally naming the node and content type.
    pub async fn raw(
        &self,
        url: impl reqwest::IntoUrl,
        node: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.client.post(url).body(body);
        if let Some(n) = node {
            req = req.header("x-hallgate-node", n);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await.expect("request")
    }

    /// The first delivery `GET /v1/deliveries?{query}` lists, waiting up to 10 s for
    /// one; `Value::Null` if none appears.
    pub async fn first_delivery(&self, path_and_query: &str) -> Value {
        for _ in 0..400 {
            let (_, list) = self.get(path_and_query).await;
            if let Some(d) = list["deliveries"].as_array().and_then(|a| a.first()) {
                return d.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Value::Null
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Wait until `f` holds, up to `secs` seconds; panics with `what` otherwise.
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Run a command with `stdin` as its input, its output captured.
pub fn run_with_stdin(mut cmd: std::process::Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn application(case_no: &str, region: &str) -> Value {
    json!({
        "kind": "application",
        "case_no": case_no,
        "region": region,
        "item_code": "11350200MB0000000X01XK0010100Y0001",
        "item_name": "公共场所卫生许可",
        "applicant": {"type": "person", "name": "林晓东", "id_type": "111", "id_no": "350205195912280259"},
        "contact": {"name": "林晓东", "mobile": "18659201234"},
        "case_pwd": "558120"
    })
}

pub fn material(case_no: &str, region: &str, id: &str) -> Value {
    json!({"kind": "material", "case_no": case_no, "region": region, "material_id": id, "name": "申请书"})
}

pub fn process(case_no: &str, region: &str, step: u64) -> Value {
    json!({"kind": "process", "case_no": case_no, "region": region, "step_no": step, "node_name": "审查", "state": "done"})
}

pub fn result(case_no: &str, region: &str) -> Value {
    json!({"kind": "result", "case_no": case_no, "region": region, "outcome": "issued", "decision": "approve"})
}

/// The order key a receiver should see within one case.
pub fn order_label(v: &Value) -> String {
    match v["kind"].as_str().unwrap_or("") {
        "process" => format!("process:{}", v["step_no"]),
        "material" => format!("material:{}", v["material_id"].as_str().unwrap_or("")),
        k => k.to_string(),
    }
}
