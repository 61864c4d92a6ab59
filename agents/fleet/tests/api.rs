//! fleet's HTTP API v1 as served by `fleet::api::serve`, over a Unix socket and over TCP, from
//! the in-memory test double `fleet::api::memory::MemoryStore` (the etcd-backed registry has
//! its own tests against a real etcd). Covers every status code of the units, state and
//! machines resources, the error entity, paging with tokens, the state filters and the
//! machine metadata PATCH, and the client's typed errors and timeout.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleet::api::memory::MemoryStore;
use fleet::api::{serve, Client, ClientError, Endpoint, Listener};
use fleet::model::{TargetState, UnitOption};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

struct Answer {
    status: u16,
    server: String,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Checks fleet's error entity and returns its message.
    fn error(&self, code: u16) -> String {
        assert_eq!(self.status, code, "{}", self.body);
        assert_eq!(self.content_type, "application/json");
        let v = self.json();
        assert_eq!(v["error"]["code"], json!(code), "{}", self.body);
        assert_eq!(v.as_object().unwrap().len(), 1, "{}", self.body);
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

/// One raw HTTP/1.1 request, so the tests see exactly what the server answers.
async fn raw(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Answer {
    let (io, host): (Box<dyn Io>, String) = match endpoint {
        Endpoint::Unix(p) => (
            Box::new(tokio::net::UnixStream::connect(p).await.unwrap()),
            "domain-sock".into(),
        ),
        Endpoint::Http { authority } => (
            Box::new(
                tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .unwrap(),
            ),
            authority.clone(),
        ),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let header = |n: &str| {
        res.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, server, content_type) = (
        res.status().as_u16(),
        header("server"),
        header("content-type"),
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        server,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

async fn get(ep: &Endpoint, path: &str) -> Answer {
    raw(ep, "GET", path, None, "").await
}

async fn put(ep: &Endpoint, path: &str, body: Value) -> Answer {
    raw(ep, "PUT", path, Some("application/json"), &body.to_string()).await
}

async fn serve_tcp(store: Arc<MemoryStore>) -> Endpoint {
    let listener = Listener::tcp("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::parse(&listener.endpoint()).unwrap();
    tokio::spawn(serve(store, listener));
    endpoint
}

fn serve_unix(store: Arc<MemoryStore>, path: &Path) -> Endpoint {
    let listener = Listener::unix(path).unwrap();
    let endpoint = Endpoint::parse(&listener.endpoint()).unwrap();
    tokio::spawn(serve(store, listener));
    endpoint
}

fn sleep_unit() -> Value {
    json!([
        {"section": "Unit", "name": "Description", "value": "sleeper"},
        {"section": "Service", "name": "ExecStart", "value": "/usr/bin/sleep 3000"},
    ])
}

#[tokio::test]
async fn units_resource_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fleet.sock");
    // A socket file left behind by an earlier fleetd is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let store = Arc::new(MemoryStore::new());
    store.add_machine("113f16a7b2c94a8cb6d9bbdab5a3b6b4", "172.17.8.103", &[]);
    let ep = serve_unix(store.clone(), &sock);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    // An empty collection.
    let a = get(&ep, "/fleet/v1/units").await;
    assert_eq!(a.status, 200);
    assert!(a.server.starts_with("fleetd/"), "{}", a.server);
    assert_eq!(a.json(), json!({"units": []}));

    // Create: 201 and no body.
    let a = put(
        &ep,
        "/fleet/v1/units/hello.service",
        json!({"desiredState": "launched", "options": sleep_unit()}),
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (201, ""));
    let a = get(&ep, "/fleet/v1/units/hello.service").await;
    assert_eq!(a.status, 200);
    let u = a.json();
    assert_eq!(u["name"], "hello.service");
    assert_eq!(u["desiredState"], "launched");
    assert_eq!(u["currentState"], "launched");
    assert_eq!(u["machineID"], "113f16a7b2c94a8cb6d9bbdab5a3b6b4");
    assert_eq!(u["options"], sleep_unit());

    // The same options again, or only a desired state: 204.
    let a = put(
        &ep,
        "/fleet/v1/units/hello.service",
        json!({"desiredState": "launched", "options": sleep_unit(), "name": "hello.service"}),
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    let a = put(
        &ep,
        "/fleet/v1/units/hello.service",
        json!({"desiredState": "loaded"}),
    )
    .await;
    assert_eq!(a.status, 204);
    assert_eq!(
        store.peek("hello.service").unwrap().desired_state,
        TargetState::Loaded
    );

    // Other options for an existing unit: 409.
    let other = json!([{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]);
    let m = put(
        &ep,
        "/fleet/v1/units/hello.service",
        json!({"desiredState": "launched", "options": other}),
    )
    .await
    .error(409);
    assert!(m.contains("different options"), "{m}");
    // An existing unit without a desired state: 409, as fleet.
    let m = put(
        &ep,
        "/fleet/v1/units/hello.service",
        json!({"options": sleep_unit()}),
    )
    .await
    .error(409);
    assert_eq!(m, "must provide DesiredState to update existing unit");
    // A new unit without options: 409, as fleet.
    let m = put(
        &ep,
        "/fleet/v1/units/new.service",
        json!({"desiredState": "launched"}),
    )
    .await
    .error(409);
    assert_eq!(m, "unit does not exist and options field empty");
    // A new unit without a desired state is created inactive, as fleet.
    let a = put(
        &ep,
        "/fleet/v1/units/quiet.service",
        json!({"options": sleep_unit()}),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(
        store.peek("quiet.service").unwrap().desired_state,
        TargetState::Inactive
    );
    // An option whose value Go's omitempty dropped is an empty value.
    let a = put(
        &ep,
        "/fleet/v1/units/empty-value.service",
        json!({"desiredState": "inactive", "options": [
            {"section": "Service", "name": "ExecStart", "value": "/bin/true"},
            {"section": "Service", "name": "Environment"}]}),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(
        store.peek("empty-value.service").unwrap().options[1].value,
        ""
    );

    // 400s: invalid name, name mismatch, bad JSON, bad state, template activation,
    // requirements that cannot be met.
    for (path, body) in [
        (
            "/fleet/v1/units/hello",
            json!({"desiredState": "launched", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/hello.conf",
            json!({"desiredState": "launched", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/@x.service",
            json!({"desiredState": "launched", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/a.service",
            json!({"name": "b.service", "desiredState": "launched", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/a.service",
            json!({"desiredState": "running", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/t@.service",
            json!({"desiredState": "launched", "options": sleep_unit()}),
        ),
        (
            "/fleet/v1/units/a.service",
            json!({"desiredState": "launched", "options": [
                {"section": "X-Fleet", "name": "Global", "value": "true"},
                {"section": "X-Fleet", "name": "MachineID", "value": "abc"}]}),
        ),
    ] {
        let m = put(&ep, path, body).await.error(400);
        assert!(!m.is_empty(), "{path}");
    }
    let m = raw(
        &ep,
        "PUT",
        "/fleet/v1/units/a.service",
        Some("application/json"),
        "{\"desiredState\":",
    )
    .await
    .error(400);
    assert!(m.starts_with("unable to decode body"), "{m}");
    let a = put(
        &ep,
        "/fleet/v1/units/t@.service",
        json!({"desiredState": "inactive", "options": sleep_unit()}),
    )
    .await;
    assert_eq!(a.status, 201, "a template may be submitted, not activated");
    // PUT needs a JSON body type: 415.
    raw(
        &ep,
        "PUT",
        "/fleet/v1/units/a.service",
        Some("text/plain"),
        "{}",
    )
    .await
    .error(415);
    raw(&ep, "PUT", "/fleet/v1/units/a.service", None, "{}")
        .await
        .error(415);
    let a = raw(
        &ep,
        "PUT",
        "/fleet/v1/units/charset.service",
        Some("application/json; charset=utf-8"),
        &json!({"desiredState": "inactive", "options": sleep_unit()}).to_string(),
    )
    .await;
    assert_eq!(a.status, 201);

    // 404 for a unit that does not exist; DELETE 204 then 404.
    assert_eq!(
        get(&ep, "/fleet/v1/units/nope.service").await.error(404),
        "unit does not exist"
    );
    let a = raw(&ep, "DELETE", "/fleet/v1/units/quiet.service", None, "").await;
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    raw(&ep, "DELETE", "/fleet/v1/units/quiet.service", None, "")
        .await
        .error(404);
    // Names travel percent-encoded.
    let a = put(
        &ep,
        "/fleet/v1/units/web%401.service",
        json!({"desiredState": "inactive", "options": sleep_unit()}),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(
        get(&ep, "/fleet/v1/units/web@1.service").await.json()["name"],
        "web@1.service"
    );

    // Methods and routes.
    raw(&ep, "POST", "/fleet/v1/units", None, "")
        .await
        .error(405);
    raw(&ep, "DELETE", "/fleet/v1/units", None, "")
        .await
        .error(405);
    raw(&ep, "POST", "/fleet/v1/units/hello.service", None, "")
        .await
        .error(405);
    raw(&ep, "PUT", "/fleet/v1/state", None, "")
        .await
        .error(405);
    raw(&ep, "DELETE", "/fleet/v1/machines", None, "")
        .await
        .error(405);
    get(&ep, "/").await.error(405);
    get(&ep, "/fleet/v1").await.error(405);
    get(&ep, "/fleet/v1/nothing").await.error(404);
    get(&ep, "/fleet/v1/units/").await.error(404);
    get(&ep, "/fleet/v1/units/a/b.service").await.error(404);
    get(&ep, "/fleet/v2/units").await.error(404);
    get(&ep, "/fleet/v1/machines/x").await.error(404);
    let d = get(&ep, "/fleet/v1/discovery.json").await;
    assert_eq!(d.status, 200);
    assert_eq!(d.json()["id"], "fleet:v1");

    // A failing backend: 500 with the error entity.
    store.fail_with(Some("etcd is unreachable"));
    let m = get(&ep, "/fleet/v1/units").await.error(500);
    assert!(m.contains("etcd is unreachable"), "{m}");
    get(&ep, "/fleet/v1/state").await.error(500);
    put(
        &ep,
        "/fleet/v1/units/x.service",
        json!({"desiredState": "loaded"}),
    )
    .await
    .error(500);
    store.fail_with(None);
    assert_eq!(get(&ep, "/fleet/v1/units").await.status, 200);
}

fn numbered(i: usize) -> String {
    format!("u{i:04}.service")
}

#[tokio::test]
async fn pagination_over_tcp() {
    let store = Arc::new(MemoryStore::new());
    let ep = serve_tcp(store.clone()).await;
    let client = Client::new(ep.clone());
    let options = vec![UnitOption {
        section: "Service".into(),
        name: "ExecStart".into(),
        value: "/bin/true".into(),
    }];
    for i in 0..250 {
        assert!(client
            .create_unit(&numbered(i), &options, TargetState::Inactive)
            .await
            .unwrap());
    }

    // Pages of 100 with opaque tokens; the last page has none.
    let first = get(&ep, "/fleet/v1/units").await.json();
    assert_eq!(first["units"].as_array().unwrap().len(), 100);
    assert_eq!(first["units"][0]["name"], numbered(0));
    let t1 = first["nextPageToken"].as_str().unwrap().to_string();
    let second = get(&ep, &format!("/fleet/v1/units?nextPageToken={t1}"))
        .await
        .json();
    assert_eq!(second["units"][0]["name"], numbered(100));
    let t2 = second["nextPageToken"].as_str().unwrap().to_string();
    assert_ne!(t1, t2);
    // Other query parameters (Google clients send alt=json) are ignored.
    let third = get(&ep, &format!("/fleet/v1/units?alt=json&nextPageToken={t2}"))
        .await
        .json();
    assert_eq!(third["units"].as_array().unwrap().len(), 50);
    assert_eq!(third["units"][49]["name"], numbered(249));
    assert!(third.get("nextPageToken").is_none());

    // The client follows the tokens.
    let all = client.units().await.unwrap();
    assert_eq!(all.len(), 250);
    assert!(all.iter().enumerate().all(|(i, u)| u.name == numbered(i)));

    // Bad tokens: 400.
    let m = get(&ep, "/fleet/v1/units?nextPageToken=garbage!")
        .await
        .error(400);
    assert_eq!(m, "invalid value of nextPageToken query parameter");
    let ten = fleet::api::PageToken { limit: 10, page: 2 }.encode();
    let m = get(&ep, &format!("/fleet/v1/units?nextPageToken={ten}"))
        .await
        .error(400);
    assert_eq!(m, "token limit must be 100");
    let zero = fleet::api::PageToken {
        limit: 100,
        page: 0,
    }
    .encode();
    get(&ep, &format!("/fleet/v1/units?nextPageToken={zero}"))
        .await
        .error(400);
    let m = get(
        &ep,
        &format!("/fleet/v1/units?nextPageToken={t1}&nextPageToken={t2}"),
    )
    .await
    .error(400);
    assert_eq!(m, "too many values for page token");
    // A page past the end is empty.
    let far = fleet::api::PageToken {
        limit: 100,
        page: 9,
    }
    .encode();
    assert_eq!(
        get(&ep, &format!("/fleet/v1/units?nextPageToken={far}"))
            .await
            .json(),
        json!({"units": []})
    );

    // Exactly one full page: fleet still names a next, empty, page.
    for i in 100..250 {
        client.destroy_unit(&numbered(i)).await.unwrap();
    }
    let one = get(&ep, "/fleet/v1/units").await.json();
    assert_eq!(one["units"].as_array().unwrap().len(), 100);
    let t = one["nextPageToken"].as_str().unwrap();
    assert_eq!(
        get(&ep, &format!("/fleet/v1/units?nextPageToken={t}"))
            .await
            .json(),
        json!({"units": []})
    );
    assert_eq!(client.units().await.unwrap().len(), 100);
}

#[tokio::test]
async fn state_filters_and_paging() {
    let store = Arc::new(MemoryStore::new());
    store.add_machine("aaaaaaaa1111", "10.0.0.1", &[]);
    store.add_machine("bbbbbbbb2222", "10.0.0.2", &[]);
    let ep = serve_tcp(store.clone()).await;
    let client = Client::new(ep.clone());
    let options = |v: &str| {
        vec![UnitOption {
            section: "Service".into(),
            name: "ExecStart".into(),
            value: v.into(),
        }]
    };
    for i in 0..150 {
        client
            .create_unit(&numbered(i), &options("/bin/true"), TargetState::Launched)
            .await
            .unwrap();
    }
    let mut global = options("/bin/true");
    global.push(UnitOption {
        section: "X-Fleet".into(),
        name: "Global".into(),
        value: "true".into(),
    });
    client
        .create_unit("global.service", &global, TargetState::Launched)
        .await
        .unwrap();
    client
        .create_unit(
            "idle.service",
            &options("/bin/false"),
            TargetState::Inactive,
        )
        .await
        .unwrap();

    let page = get(&ep, "/fleet/v1/state").await.json();
    let states = page["states"].as_array().unwrap();
    assert_eq!(states.len(), 100);
    for key in [
        "name",
        "hash",
        "machineID",
        "systemdLoadState",
        "systemdActiveState",
        "systemdSubState",
    ] {
        assert!(states[0].get(key).is_some(), "{key} in {}", states[0]);
    }
    assert_eq!(states[0]["systemdActiveState"], "active");
    assert!(page["nextPageToken"].is_string());

    // 150 scheduled units, the global one on both machines, nothing for the inactive one.
    let all = client.unit_states().await.unwrap();
    assert_eq!(all.len(), 152);
    assert!(all.iter().all(|s| s.name != "idle.service"));

    let by_machine = client
        .unit_states_filtered(Some("aaaaaaaa1111"), None)
        .await
        .unwrap();
    assert!(!by_machine.is_empty());
    assert!(by_machine.iter().all(|s| s.machine_id == "aaaaaaaa1111"));
    let other = client
        .unit_states_filtered(Some("bbbbbbbb2222"), None)
        .await
        .unwrap();
    assert_eq!(by_machine.len() + other.len(), 152);

    let by_unit = get(&ep, "/fleet/v1/state?unitName=global.service")
        .await
        .json();
    let by_unit = by_unit["states"].as_array().unwrap();
    assert_eq!(by_unit.len(), 2);
    let both = get(
        &ep,
        "/fleet/v1/state?unitName=global.service&machineID=bbbbbbbb2222",
    )
    .await
    .json();
    assert_eq!(both["states"].as_array().unwrap().len(), 1);
    assert_eq!(both["states"][0]["machineID"], "bbbbbbbb2222");
    let none = get(&ep, "/fleet/v1/state?machineID=cccc").await.json();
    assert_eq!(none, json!({"states": []}));
}

#[tokio::test]
async fn machines_and_metadata_patch() {
    let store = Arc::new(MemoryStore::new());
    store.add_machine("e793afb9", "172.17.8.101", &[("az", "us-west-1a")]);
    store.add_machine("85c0c595", "172.17.8.102", &[]);
    let ep = serve_tcp(store.clone()).await;

    let page = get(&ep, "/fleet/v1/machines").await.json();
    assert_eq!(
        page,
        json!({"machines": [
            {"id": "85c0c595", "primaryIP": "172.17.8.102", "metadata": {}},
            {"id": "e793afb9", "primaryIP": "172.17.8.101", "metadata": {"az": "us-west-1a"}},
        ]})
    );

    let patch = |body: Value| {
        let ep = ep.clone();
        async move {
            raw(
                &ep,
                "PATCH",
                "/fleet/v1/machines",
                Some("application/json"),
                &body.to_string(),
            )
            .await
        }
    };
    let a = patch(json!([
        {"op": "add", "path": "/85c0c595/metadata/region", "value": "eu"},
        {"op": "add", "path": "/85c0c595/metadata/disk", "value": "ssd"},
        {"op": "replace", "path": "/e793afb9/metadata/az", "value": "us-west-1b"},
        {"op": "remove", "path": "/85c0c595/metadata/disk"},
    ]))
    .await;
    assert_eq!((a.status, a.body.as_str()), (204, ""));
    let page = get(&ep, "/fleet/v1/machines").await.json();
    assert_eq!(page["machines"][0]["metadata"], json!({"region": "eu"}));
    assert_eq!(page["machines"][1]["metadata"], json!({"az": "us-west-1b"}));

    // Every operation is checked before any is applied.
    for (body, message) in [
        (
            json!([{"op": "move", "path": "/85c0c595/metadata/a", "value": "b"}]),
            "invalid op: expect add, remove, or replace",
        ),
        (
            json!([{"op": "add", "path": "/85c0c595/labels/a", "value": "b"}]),
            "machine metadata path invalid",
        ),
        (
            json!([{"op": "add", "path": "/85c0c595/metadata/a b", "value": "b"}]),
            "machine metadata path invalid",
        ),
        (
            json!([
                {"op": "add", "path": "/85c0c595/metadata/ok", "value": "yes"},
                {"op": "add", "path": "/85c0c595/metadata/a"}]),
            "invalid value: add and replace require a value",
        ),
    ] {
        assert_eq!(patch(body).await.error(400), message);
    }
    patch(json!({"op": "add"})).await.error(400);
    raw(&ep, "PATCH", "/fleet/v1/machines", None, "not json")
        .await
        .error(400);
    let page = get(&ep, "/fleet/v1/machines").await.json();
    assert!(page["machines"][0]["metadata"].get("ok").is_none());
    // A machine the store does not know.
    patch(json!([{"op": "add", "path": "/ffffffff/metadata/a", "value": "b"}]))
        .await
        .error(404);

    // Through the client.
    let client = Client::new(ep.clone());
    client
        .set_machine_metadata("e793afb9", "role", "db")
        .await
        .unwrap();
    client
        .delete_machine_metadata("e793afb9", "az")
        .await
        .unwrap();
    let machines = client.machines().await.unwrap();
    assert_eq!(
        machines[1].metadata.get("role").map(String::as_str),
        Some("db")
    );
    assert!(!machines[1].metadata.contains_key("az"));
    let e = client
        .patch_machines(&[fleet::api::MetadataOp {
            op: "copy".into(),
            path: "/e793afb9/metadata/a".into(),
            value: "b".into(),
        }])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(400));
}

#[tokio::test]
async fn client_errors_and_timeout() {
    let store = Arc::new(MemoryStore::new());
    let ep = serve_tcp(store.clone()).await;
    let client = Client::new(ep.clone());
    let opts = |v: &str| {
        vec![UnitOption {
            section: "Service".into(),
            name: "ExecStart".into(),
            value: v.into(),
        }]
    };
    assert!(client.unit("a.service").await.unwrap().is_none());
    assert!(client
        .create_unit("a.service", &opts("/bin/true"), TargetState::Loaded)
        .await
        .unwrap());
    assert!(!client
        .create_unit("a.service", &opts("/bin/true"), TargetState::Launched)
        .await
        .unwrap());
    match client
        .create_unit("a.service", &opts("/bin/false"), TargetState::Launched)
        .await
    {
        Err(ClientError::Api { code: 409, message }) => {
            assert!(message.contains("different options"))
        }
        other => panic!("{other:?}"),
    }
    let e = client
        .set_unit_target_state("missing.service", TargetState::Loaded)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(409));
    let e = client.destroy_unit("missing.service").await.unwrap_err();
    assert_eq!(e.to_string(), "unit does not exist (404)");

    // A server that accepts and never answers: the request times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = silent.accept().await.unwrap();
            held.push(s);
        }
    });
    let slow = Client::connect(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(matches!(slow.units().await, Err(ClientError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(3));

    // Nothing listening: a transport error naming the socket.
    let e = Client::connect("unix:///nonexistent/fleet.sock")
        .unwrap()
        .units()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/fleet.sock"), "{e}");
}

#[tokio::test]
async fn a_regular_file_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.sock");
    std::fs::write(&path, "not a socket").unwrap();
    assert!(Listener::unix(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[tokio::test]
async fn shutdown_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.sock");
    let listener = Listener::unix(&path).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(fleet::api::serve_until(
        Arc::new(MemoryStore::new()),
        listener,
        fleet::api::ApiConfig { token_limit: 2 },
        async {
            let _ = rx.await;
        },
    ));
    let client = Client::connect(&format!("unix://{}", path.display())).unwrap();
    let opts = vec![UnitOption {
        section: "Service".into(),
        name: "ExecStart".into(),
        value: "/bin/true".into(),
    }];
    for i in 0..5 {
        client
            .create_unit(&numbered(i), &opts, TargetState::Inactive)
            .await
            .unwrap();
    }
    // A configured token limit sets the page size.
    let page = client.unit_page(None).await.unwrap();
    assert_eq!(page.units.len(), 2);
    assert_eq!(client.units().await.unwrap().len(), 5);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(!path.exists());
}
