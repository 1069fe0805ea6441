//! The simulated Dataverse over real HTTP (reqwest against `sim::dataverse` on 127.0.0.1:0):
//! the token flow, paging by nextLink, change tracking, upserts, conditional writes, `$batch`
//! changesets and service protection.

use std::collections::BTreeSet;
use std::time::Duration;

use izrelay::sim::dataverse::{self, Config, Outage, Running, Scheduled, Table};
use serde_json::{Value, json};

const SET: &str = "msemr_medicationadministrations";
const PK: &str = "msemr_medicationadministrationid";
const KEY: &str = "msemr_messagecontrolid";

fn table(tracked: bool) -> Table {
    Table {
        entity_set: SET.into(),
        logical_name: "msemr_medicationadministration".into(),
        primary_key: PK.into(),
        alternate_keys: vec![vec![KEY.into()]],
        change_tracking: tracked,
        choices: std::collections::BTreeMap::new(),
    }
}

fn config() -> Config {
    Config { tables: vec![table(true)], ..Config::default() }
}

async fn start(config: Config) -> Running {
    dataverse::start("127.0.0.1:0".parse().expect("addr"), config).await.expect("sim starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

fn id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

async fn token_with(c: &reqwest::Client, sim: &Running, secret: &str) -> reqwest::Response {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "sim-client")
        .append_pair("client_secret", secret)
        .append_pair("scope", &format!("{}/.default", sim.url))
        .append_pair("grant_type", "client_credentials")
        .finish();
    c.post(sim.token_url())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("token request")
}

async fn token(c: &reqwest::Client, sim: &Running) -> String {
    let r = token_with(c, sim, "sim-secret").await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    v["access_token"].as_str().expect("token").to_owned()
}

/// A GET with the usual Dataverse headers; (status, headers, JSON body or Null).
async fn get(
    c: &reqwest::Client,
    tok: &str,
    url: &str,
    prefer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rq = c
        .get(url)
        .bearer_auth(tok)
        .header("Accept", "application/json")
        .header("OData-MaxVersion", "4.0")
        .header("OData-Version", "4.0");
    if let Some(p) = prefer {
        rq = rq.header("Prefer", p);
    }
    let r = rq.send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn patch(
    c: &reqwest::Client,
    tok: &str,
    url: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rq = c
        .patch(url)
        .bearer_auth(tok)
        .header("Content-Type", "application/json")
        .header("OData-Version", "4.0");
    for (k, v) in extra {
        rq = rq.header(*k, *v);
    }
    let r = rq.body(body.to_string()).send().await.expect("PATCH");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// Follows nextLink unchanged to the end: (ids in order, pages, the final deltaLink, deletes).
async fn drain(
    c: &reqwest::Client,
    tok: &str,
    first: &str,
    prefer: &str,
) -> (Vec<String>, usize, Option<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut deleted = Vec::new();
    let mut pages = 0;
    let mut url = first.to_owned();
    loop {
        let (status, headers, body) = get(c, tok, &url, Some(prefer)).await;
        assert_eq!(status, 200, "{body}");
        assert!(headers.get("Preference-Applied").is_some());
        pages += 1;
        for row in body["value"].as_array().expect("value") {
            if row["reason"] == "deleted" {
                assert!(row["@odata.context"].as_str().expect("ctx").ends_with("/$deletedEntity"));
                deleted.push(row["id"].as_str().expect("id").to_owned());
            } else {
                assert!(row["@odata.etag"].as_str().expect("etag").starts_with("W/\""));
                ids.push(row[PK].as_str().expect("pk").to_owned());
            }
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(body["@odata.deltaLink"].is_null(), "deltaLink only on the last page");
                url = next.to_owned();
            }
            None => {
                return (ids, pages, body["@odata.deltaLink"].as_str().map(str::to_owned), deleted);
            }
        }
    }
}

fn seed(sim: &Running, n: usize) {
    for i in 0..n {
        sim.upsert_row(
            SET,
            json!({PK: id(i), KEY: format!("MSG-{i}"), "msemr_name": format!("dose {i}"), "x_n": i, "x_done": i % 2 == 0, "msemr_patient": {"fullname": format!("P{i}"), "birthdate": "2001-01-01"}, "_msemr_patient_value": id(100_000 + i)}),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_token_flow() {
    let sim = start(Config { token_lifetime_secs: 1, ..config() }).await;
    let c = http();
    let api = format!("{}{SET}", sim.api_url());

    let bad = token_with(&c, &sim, "wrong").await;
    assert_eq!(bad.status(), 401);
    let v: Value = serde_json::from_str(&bad.text().await.expect("body")).expect("json");
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_codes"], json!([7000215]));
    assert!(
        v["error_description"]
            .as_str()
            .expect("text")
            .starts_with("AADSTS7000215: Invalid client secret provided")
    );

    let (status, headers, body) = get(&c, "not-a-token", &api, None).await;
    assert_eq!(status, 401);
    assert!(headers.get("WWW-Authenticate").is_some());
    assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string());
    let r = c.get(&api).send().await.expect("GET");
    assert_eq!(r.status(), 401, "no Authorization header");

    let tok = token(&c, &sim).await;
    let (status, headers, body) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("OData-Version").expect("header"), "4.0");
    assert_eq!(body["value"], json!([]));

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _, body) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 401, "expired token");
    assert!(body["error"]["message"].as_str().expect("msg").contains("ExpiredAuthTicket"));
    let stats = sim.stats();
    assert_eq!(stats.unauthorized, 4, "{stats:?}");
    assert_eq!(stats.token_requests, 2);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_pages_12000_rows_by_next_link() {
    let sim = start(Config { tables: vec![table(false)], ..Config::default() }).await;
    seed(&sim, 12_000);
    let c = http();
    let tok = token(&c, &sim).await;
    let first = format!("{}{SET}?$select=msemr_name,x_n", sim.api_url());
    let expected: Vec<String> = (0..12_000).map(id).collect();

    for (size, pages) in [(5000, 3), (1000, 12)] {
        let prefer = format!("odata.maxpagesize={size}");
        let (ids, n, delta, _) = drain(&c, &tok, &first, &prefer).await;
        assert_eq!(n, pages, "pages at {size}");
        assert_eq!(ids, expected, "every row once, in primary-key order, at {size}");
        assert_eq!(delta, None, "no deltaLink without change tracking");
    }

    // The first page: the documented shape of rows and of the nextLink.
    let (_, headers, body) = get(&c, &tok, &first, Some("odata.maxpagesize=2")).await;
    assert_eq!(headers.get("Preference-Applied").expect("applied"), "odata.maxpagesize=2");
    assert_eq!(
        body["@odata.context"],
        format!("{}/api/data/v9.2/$metadata#{SET}(msemr_name,x_n)", sim.url)
    );
    let row = &body["value"][0];
    assert_eq!(row[PK], id(0));
    assert_eq!(row["msemr_name"], "dose 0");
    assert!(row.get("msemr_patient").is_none(), "navigation not expanded");
    assert!(row.get(KEY).is_none(), "not selected");
    let next = body["@odata.nextLink"].as_str().expect("next");
    assert!(
        next.starts_with(&format!(
            "{first}&$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e%253cmsemr_medicationadministrationid%2520last%253d%2522%257b00000000-0000-4000-8000-000000000001%257d"
        )),
        "{next}"
    );

    // Without maxpagesize: 5000; above the cap: capped; $top without maxpagesize: no nextLink.
    let (_, _, body) = get(&c, &tok, &first, None).await;
    assert_eq!(body["value"].as_array().expect("value").len(), 5000);
    let (_, headers, body) = get(&c, &tok, &first, Some("odata.maxpagesize=9000")).await;
    assert_eq!(body["value"].as_array().expect("value").len(), 5000);
    assert_eq!(headers.get("Preference-Applied").expect("applied"), "odata.maxpagesize=5000");
    let (_, _, body) = get(&c, &tok, &format!("{first}&$top=3"), None).await;
    assert_eq!(body["value"].as_array().expect("value").len(), 3);
    assert!(body["@odata.nextLink"].is_null());
    let (_, _, body) = get(&c, &tok, &format!("{first}&$top=3"), Some("odata.maxpagesize=4")).await;
    assert_eq!(body["value"].as_array().expect("value").len(), 4, "$top ignored");

    // $filter, $orderby and $expand.
    let q = format!(
        "{}{SET}?$select=x_n&$filter=x_n ge 100 and x_n lt 110 and x_done eq true&$orderby=x_n desc&$expand=msemr_patient($select=fullname)",
        sim.api_url()
    );
    let (status, _, body) = get(&c, &tok, &q, Some("odata.maxpagesize=3")).await;
    assert_eq!(status, 200, "{body}");
    let ns: Vec<i64> = body["value"]
        .as_array()
        .expect("v")
        .iter()
        .map(|r| r["x_n"].as_i64().expect("n"))
        .collect();
    assert_eq!(ns, vec![108, 106, 104]);
    assert_eq!(body["value"][0]["msemr_patient"], json!({"fullname": "P108"}));
    let (_, _, body2) =
        get(&c, &tok, body["@odata.nextLink"].as_str().expect("next"), Some("odata.maxpagesize=3"))
            .await;
    let ns: Vec<i64> = body2["value"]
        .as_array()
        .expect("v")
        .iter()
        .map(|r| r["x_n"].as_i64().expect("n"))
        .collect();
    assert_eq!(ns, vec![102, 100]);
    let inq = format!(
        "{}{SET}?$select=x_n&$filter=Microsoft.Dynamics.CRM.In(PropertyName='{KEY}',PropertyValues=['MSG-7','msg-9'])",
        sim.api_url()
    );
    let (_, _, body) = get(&c, &tok, &inq, None).await;
    assert_eq!(body["value"].as_array().expect("v").len(), 2);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_change_tracking_returns_exactly_the_changes() {
    let sim = start(config()).await;
    seed(&sim, 300);
    let c = http();
    let tok = token(&c, &sim).await;
    let first = format!("{}{SET}?$select=msemr_name", sim.api_url());
    let prefer = "odata.track-changes, odata.maxpagesize=100";

    let (ids, pages, delta, deleted) = drain(&c, &tok, &first, prefer).await;
    assert_eq!((ids.len(), pages, deleted.len()), (300, 3, 0));
    let delta = delta.expect("deltaLink on the last page");
    assert!(delta.starts_with(&format!("{first}&$deltatoken=")), "{delta}");

    // Filters are refused with change tracking (verbatim message).
    let (status, _, body) =
        get(&c, &tok, &format!("{first}&$filter=x_n eq 1"), Some("odata.track-changes")).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "The \"$filter\" query parameter isn't supported when Change Tracking is enabled."
    );
    let (status, _, body) =
        get(&c, &tok, &format!("{first}&$top=1"), Some("odata.track-changes")).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().expect("m").starts_with("The \"$top\" query"));

    // Change 100 rows, delete 1 other: the deltaLink returns exactly those.
    let changed: BTreeSet<String> = (0..100).map(|i| id(i * 2 + 1)).collect();
    for pk in &changed {
        let mut row = sim.row(SET, pk).expect("row");
        row["msemr_name"] = json!("changed");
        sim.upsert_row(SET, row);
    }
    sim.delete_row(SET, &id(0));
    let (ids, pages, delta2, deleted) = drain(&c, &tok, &delta, "odata.maxpagesize=30").await;
    assert_eq!(pages, 4, "101 entries at 30 a page");
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), changed);
    assert_eq!(ids.len(), 100, "each changed row once");
    assert_eq!(deleted, vec![id(0)]);
    let delta2 = delta2.expect("a new deltaLink");

    // No changes since: an empty value and a new deltaLink.
    let (status, _, body) = get(&c, &tok, &delta2, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], json!([]));
    assert!(body["@odata.deltaLink"].is_string());

    // Expired tokens are an error; a full read gives a working link again.
    sim.expire_delta_tokens();
    let (status, _, body) = get(&c, &tok, &delta2, None).await;
    assert_eq!(status, 410, "{body}");
    assert!(body["error"]["message"].as_str().expect("m").contains("expired"));
    let (ids, _, delta3, _) = drain(&c, &tok, &first, prefer).await;
    assert_eq!(ids.len(), 299);
    let (status, _, body) = get(&c, &tok, &delta3.expect("link"), None).await;
    assert_eq!((status, body["value"].clone()), (200, json!([])));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_upserts_by_id_and_alternate_key() {
    let sim = start(config()).await;
    let c = http();
    let tok = token(&c, &sim).await;
    let api = sim.api_url();

    // By alternate key, twice: one row, two writes.
    let by_key = format!("{api}{SET}({KEY}='MSG-42')");
    for n in 1..=2 {
        let (status, headers, body) =
            patch(&c, &tok, &by_key, &json!({"msemr_name": format!("v{n}")}), &[]).await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            headers.get("OData-EntityId").expect("entity id"),
            &format!("{api}{SET}({KEY}='MSG-42')")
        );
    }
    let rows = sim.rows(SET);
    assert_eq!(rows.len(), 1);
    let pk = rows[0][PK].as_str().expect("pk").to_owned();
    assert_eq!(rows[0]["msemr_name"], "v2");
    assert_eq!(rows[0][KEY], "MSG-42");
    assert_eq!(sim.stats().writes_to(SET, &pk), 2);

    // By a client-chosen id, twice: one more row, two writes; @odata.bind stored as _x_value.
    let by_id = format!("{api}{SET}({})", id(7));
    for _ in 0..2 {
        let body =
            json!({KEY: "MSG-7", "msemr_Patient@odata.bind": format!("/contacts({})", id(99))});
        let (status, headers, text) = patch(&c, &tok, &by_id, &body, &[]).await;
        assert_eq!(status, 204, "{text}");
        assert_eq!(headers.get("OData-EntityId").expect("id"), &by_id);
    }
    assert_eq!(sim.rows(SET).len(), 2);
    assert_eq!(sim.stats().writes_to(SET, &id(7)), 2);
    let row = sim.row(SET, &id(7)).expect("row");
    assert_eq!(row["_msemr_patient_value"], id(99));
    assert!(row["modifiedon"].as_str().expect("modifiedon").ends_with('Z'));

    // A second row cannot take an existing alternate key.
    let (status, _, text) =
        patch(&c, &tok, &format!("{api}{SET}({})", id(8)), &json!({KEY: "MSG-7"}), &[]).await;
    assert_eq!(status, 412, "{text}");
    // An undeclared key is refused.
    let (status, _, text) =
        patch(&c, &tok, &format!("{api}{SET}(msemr_name='x')"), &json!({"x_n": 1}), &[]).await;
    assert_eq!(status, 400);
    assert!(text.contains("The key in the request URI is not valid for resource"), "{text}");

    // POST creates with a new GUID (204 + OData-EntityId) or answers the row (201).
    let r = c
        .post(format!("{api}{SET}"))
        .bearer_auth(&tok)
        .header("Content-Type", "application/json")
        .body(json!({"msemr_name": "posted"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 204);
    let loc = r.headers().get("OData-EntityId").expect("id").to_str().expect("ascii").to_owned();
    let new_id = loc.rsplit_once('(').expect("(").1.trim_end_matches(')').to_owned();
    assert_eq!(sim.row(SET, &new_id).expect("created")["msemr_name"], "posted");
    let r = c
        .post(format!("{api}{SET}?$select=msemr_name"))
        .bearer_auth(&tok)
        .header("Prefer", "return=representation")
        .body(json!({"msemr_name": "rep"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["msemr_name"], "rep");
    assert!(v[PK].is_string() && v["@odata.etag"].is_string());

    // A GET by id, then 304 with its ETag; 404 for a missing row.
    let (status, headers, v) = get(&c, &tok, &by_id, None).await;
    assert_eq!(status, 200);
    let tag = headers.get("ETag").expect("etag").to_str().expect("ascii").to_owned();
    assert_eq!(v["@odata.etag"], tag);
    let r =
        c.get(&by_id).bearer_auth(&tok).header("If-None-Match", &tag).send().await.expect("GET");
    assert_eq!(r.status(), 304);
    let (status, _, v) = get(&c, &tok, &format!("{api}{SET}({})", id(5)), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        v["error"]["message"],
        format!("msemr_medicationadministration With Id = {} Does Not Exist", id(5))
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_conditional_writes() {
    let sim = start(config()).await;
    let c = http();
    let tok = token(&c, &sim).await;
    let url = format!("{}{SET}({})", sim.api_url(), id(1));

    let (status, _, text) = patch(&c, &tok, &url, &json!({"x_n": 1}), &[("If-Match", "*")]).await;
    assert_eq!(status, 404, "If-Match: * never creates");
    assert!(text.contains("Does Not Exist"));
    assert!(sim.row(SET, &id(1)).is_none());

    let (status, _, _) = patch(&c, &tok, &url, &json!({"x_n": 1}), &[("If-None-Match", "*")]).await;
    assert_eq!(status, 204, "If-None-Match: * creates");
    let (status, _, text) =
        patch(&c, &tok, &url, &json!({"x_n": 2}), &[("If-None-Match", "*")]).await;
    assert_eq!(status, 412);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json")["error"]["message"],
        "A record with matching key values already exists."
    );

    let tag = sim.row(SET, &id(1)).expect("row")["@odata.etag"].as_str().expect("etag").to_owned();
    let (status, _, text) =
        patch(&c, &tok, &url, &json!({"x_n": 3}), &[("If-Match", "W/\"1\"")]).await;
    assert_eq!(status, 412);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        json!({"error": {"code": "", "message": "The version of the existing record doesn't match the RowVersion property provided."}})
    );
    assert_eq!(sim.row(SET, &id(1)).expect("row")["x_n"], 1, "unchanged");
    let (status, headers, text) = patch(
        &c,
        &tok,
        &url,
        &json!({"x_n": 4}),
        &[("If-Match", &tag), ("Prefer", "return=representation")],
    )
    .await;
    assert_eq!(status, 200, "update with the current ETag: {text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["x_n"], 4);
    assert_ne!(v["@odata.etag"], tag, "every write bumps the version");
    assert_eq!(headers.get("ETag").expect("etag").to_str().expect("ascii"), v["@odata.etag"]);
    assert_eq!(sim.stats().writes_to(SET, &id(1)), 2);
    sim.stop().await;
}

fn changeset_batch(ops: &[(&str, &str, &str)]) -> (String, String) {
    let mut cs = String::new();
    for (i, (method, url, body)) in ops.iter().enumerate() {
        cs.push_str(&format!(
            "--changeset_c1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}\r\n",
            i + 1
        ));
    }
    cs.push_str("--changeset_c1--\r\n");
    let body = format!(
        "--batch_b1\r\nContent-Type: multipart/mixed; boundary=\"changeset_c1\"\r\n\r\n{cs}\r\n--batch_b1--\r\n"
    );
    (body, "multipart/mixed; boundary=\"batch_b1\"".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_batch_changeset_rolls_back() {
    let sim = start(config()).await;
    seed(&sim, 3);
    let c = http();
    let tok = token(&c, &sim).await;
    let path = |n: usize| format!("/api/data/v9.2/{SET}({})", id(n));
    let before = sim.rows(SET);
    let writes_before = sim.stats().writes;

    // The third PATCH names an undeclared key: the whole changeset is rolled back.
    let bad = format!("/api/data/v9.2/{SET}(nosuchkey='x')");
    let (p0, p1) = (path(0), path(1));
    let (body, ct) = changeset_batch(&[
        ("PATCH", &p0, r#"{"msemr_name":"batched"}"#),
        ("PATCH", &p1, r#"{"msemr_name":"batched"}"#),
        ("PATCH", &bad, r#"{"msemr_name":"batched"}"#),
    ]);
    let r = c
        .post(format!("{}$batch", sim.api_url()))
        .bearer_auth(&tok)
        .header("Content-Type", ct.clone())
        .body(body)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 400, "the outer status is the failure");
    let rct = r.headers().get("Content-Type").expect("ct").to_str().expect("ascii").to_owned();
    assert!(rct.starts_with("multipart/mixed; boundary=batchresponse_"), "{rct}");
    let text = r.text().await.expect("body");
    assert!(text.contains("HTTP/1.1 400 Bad Request"), "{text}");
    assert!(text.contains("The key in the request URI is not valid"));
    assert_eq!(sim.rows(SET), before, "rolled back");
    assert_eq!(sim.stats().writes, writes_before, "rolled-back writes are not counted");

    // The same three, all valid: committed, three 204s in a changesetresponse.
    let p2 = path(2);
    let (body, ct) = changeset_batch(&[
        ("PATCH", &p0, r#"{"msemr_name":"batched"}"#),
        ("PATCH", &p1, r#"{"msemr_name":"batched"}"#),
        ("PATCH", &p2, r#"{"msemr_name":"batched"}"#),
    ]);
    let r = c
        .post(format!("{}$batch", sim.api_url()))
        .bearer_auth(&tok)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(text.contains("boundary=changesetresponse_"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 204 No Content").count(), 3);
    assert_eq!(text.matches("Content-ID: ").count(), 3);
    assert!(text.contains(&format!("OData-EntityId: {}{SET}({})", sim.api_url(), id(2))));
    for n in 0..3 {
        assert_eq!(sim.row(SET, &id(n)).expect("row")["msemr_name"], "batched");
        assert_eq!(sim.stats().writes_to(SET, &id(n)), 1, "seeding is not an API write");
    }
    let stats = sim.stats();
    assert_eq!((stats.batches, stats.batch_operations), (2, 6));

    // Garbage is a 400, never a crash.
    let r = c
        .post(format!("{}$batch", sim.api_url()))
        .bearer_auth(&tok)
        .header("Content-Type", "multipart/mixed; boundary=x")
        .body(vec![0xff, 0x00, 0x12])
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 400);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_throttles_and_counts_early_requests() {
    let sim = start(Config {
        schedule: vec![Scheduled { from_ms: 0, until_ms: 1000, kind: Outage::Throttle }],
        retry_after_secs: 1,
        ..config()
    })
    .await;
    let c = http();
    // The token endpoint is not throttled.
    let tok = token(&c, &sim).await;
    let api = format!("{}{SET}", sim.api_url());

    let (status, headers, body) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 429);
    assert_eq!(headers.get("Retry-After").expect("retry-after"), "1");
    assert_eq!(
        body["error"],
        json!({"code": "0x80072322", "message": "Number of requests exceeded the limit of 6000 over time window of 300 seconds."})
    );
    assert_eq!(sim.stats().early_requests, 0);

    // Too early: counted, and throttled again.
    let (status, _, _) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 429);
    assert_eq!(sim.stats().early_requests, 1);

    // After Retry-After (and the window): served, nothing more counted.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _, _) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 200);
    let stats = sim.stats();
    assert_eq!((stats.early_requests, stats.throttled), (1, 2));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_outages_and_garbage() {
    let sim = start(Config {
        schedule: vec![
            Scheduled { from_ms: 0, until_ms: 1000, kind: Outage::Unavailable },
            Scheduled { from_ms: 1000, until_ms: 2000, kind: Outage::Down },
        ],
        ..config()
    })
    .await;
    let t0 = tokio::time::Instant::now();
    let c = http();
    let tok = token(&c, &sim).await;
    let api = format!("{}{SET}", sim.api_url());
    let (status, _, _) = get(&c, &tok, &api, None).await;
    assert_eq!(status, 503);
    tokio::time::sleep_until(t0 + Duration::from_millis(1_100)).await;
    let dropped = async { c.get(&api).bearer_auth(&tok).send().await?.text().await };
    assert!(dropped.await.is_err(), "the connection is dropped");
    tokio::time::sleep_until(t0 + Duration::from_millis(2_100)).await;
    let stats = sim.stats();
    assert_eq!((stats.unavailable, stats.dropped), (1, 1));

    for q in [
        "?$filter=x_n eq",
        "?$filter=x_n eq 'unterminated",
        "?$orderby=x_n sideways",
        "?$select=a,,b",
        "?$skiptoken=%3Ccookie%20garbage",
        "?$skip=10",
        "?$top=-1",
        "(1",
        "(nosuch='x')",
        "(%ZZ)",
    ] {
        let (status, _, body) = get(&c, &tok, &format!("{api}{q}"), None).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"]["message"].is_string(), "{q}");
    }
    let (status, _, body) = get(&c, &tok, &format!("{}nosuchset", sim.api_url()), None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "Resource not found for the segment 'nosuchset'.");
    let (status, _, _) = patch(&c, &tok, &format!("{api}({})", id(1)), &json!([1, 2]), &[]).await;
    assert_eq!(status, 400);
    let r = c
        .patch(format!("{api}({})", id(1)))
        .bearer_auth(&tok)
        .body("{not json")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 400);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_entity_definitions_for_a_probe() {
    let sim = start(config()).await;
    seed(&sim, 2);
    let c = http();
    let tok = token(&c, &sim).await;
    let url = format!(
        "{}EntityDefinitions(LogicalName='msemr_medicationadministration')?$select=LogicalName,EntitySetName,ChangeTrackingEnabled&$expand=Attributes($select=LogicalName)",
        sim.api_url()
    );
    let (status, _, v) = get(&c, &tok, &url, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["EntitySetName"], SET);
    assert_eq!(v["ChangeTrackingEnabled"], true);
    let attrs: BTreeSet<&str> = v["Attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|a| a["LogicalName"].as_str().expect("name"))
        .collect();
    for a in [PK, KEY, "msemr_name", "x_n", "modifiedon", "msemr_patient"] {
        assert!(attrs.contains(a), "{a} in {attrs:?}");
    }
    assert!(!attrs.contains("_msemr_patient_value"), "lookups are named without _…_value");
    let (status, _, _) =
        get(&c, &tok, &format!("{}EntityDefinitions(LogicalName='nope')", sim.api_url()), None)
            .await;
    assert_eq!(status, 404);
    sim.stop().await;
}

/// Kills the simulator process when the test ends, even on a failed assertion.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataverse_sim_cli_serves_seeded_tables_and_admin_routes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    let seed_file = dir.path().join("rows.json");
    let rows: Vec<Value> = (0..5).map(|i| json!({PK: id(i), KEY: format!("MSG-{i}")})).collect();
    std::fs::write(&seed_file, Value::Array(rows).to_string()).expect("seed file");
    let mut child = Child(
        crate::util::izrelay()
            .args(["sim", "dataverse", "--listen", "127.0.0.1:0", "--client-secret", "s3cret"])
            .arg("--table")
            .arg(format!("{SET}:msemr_medicationadministration:{PK}:{KEY}:tracked"))
            .arg("--seed-file")
            .arg(format!("{SET}={}", seed_file.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sim starts"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
    assert!(line.starts_with("izrelay sim dataverse listening on http://127.0.0.1:"), "{line}");
    let url = line.trim().rsplit(' ').next().expect("url").to_owned();
    let c = http();

    let rows: Value = serde_json::from_str(
        &c.get(format!("{url}/sim/rows/{SET}"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(rows.as_array().expect("rows").len(), 5);
    let r = c
        .post(format!("{url}/sim/rows/{SET}"))
        .body(json!([{PK: id(9), "msemr_name": "admin"}]).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);

    let form = format!(
        "client_id=sim-client&client_secret=s3cret&grant_type=client_credentials&scope={}",
        url::form_urlencoded::byte_serialize(format!("{url}/.default").as_bytes())
            .collect::<String>()
    );
    let r = c
        .post(format!("{url}/sim-tenant/oauth2/v2.0/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    let tok = v["access_token"].as_str().expect("token").to_owned();
    let (ids, _, delta, _) =
        drain(&c, &tok, &format!("{url}/api/data/v9.2/{SET}"), "odata.track-changes").await;
    assert_eq!(ids.len(), 6);
    assert!(delta.is_some());

    let r = c.post(format!("{url}/sim/expire-delta-tokens")).send().await.expect("POST");
    assert_eq!(r.status(), 204);
    let (status, _, _) = get(&c, &tok, &delta.expect("delta"), None).await;
    assert_eq!(status, 410);
    let stats: dataverse::Stats = serde_json::from_str(
        &c.get(format!("{url}/sim/stats")).send().await.expect("GET").text().await.expect("body"),
    )
    .expect("stats json");
    assert_eq!(stats.requests.get("GET"), Some(&2));
    assert_eq!(stats.token_requests, 1);
}
