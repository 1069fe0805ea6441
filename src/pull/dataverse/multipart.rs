//! The `multipart/mixed` format of `$batch` (`research/dataverse.md` §2.9): parts separated by
//! `--boundary` lines and closed by `--boundary--`, each with MIME headers, a blank line and a
//! body; a body of `Content-Type: application/http` is an HTTP message (request line or status
//! line, headers, blank line, body); a part of `Content-Type: multipart/mixed; boundary=…` is a
//! changeset holding further parts. Lines end in CRLF on the way out; LF alone is accepted on the
//! way in. Parsing never panics: anything malformed is an `Err(String)` the server answers with
//! 400.

/// One MIME part: its headers and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// Headers in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body, without the CRLF that precedes the next boundary.
    pub body: String,
}

/// A header value by case-insensitive name.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// The `boundary` parameter of a `multipart/mixed` content type (read by the simulated
/// Dataverse; the client knows its own boundaries).
#[cfg(any(test, feature = "simulators"))]
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
        })
        .filter(|b| !b.is_empty())
}

/// Splits headers from body at the first blank line.
fn split_head(text: &str) -> (Vec<(String, String)>, String, Result<(), String>) {
    let mut headers = Vec::new();
    let mut lines = text.split('\n');
    let mut consumed = 0;
    for line in lines.by_ref() {
        consumed += line.len() + 1;
        let l = line.strip_suffix('\r').unwrap_or(line);
        if l.is_empty() {
            let body = text.get(consumed.min(text.len())..).unwrap_or("").to_owned();
            return (headers, body, Ok(()));
        }
        match l.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_owned(), v.trim().to_owned())),
            None => return (headers, String::new(), Err(format!("invalid header line {l:?}"))),
        }
    }
    (headers, String::new(), Ok(()))
}

/// Parses a multipart body into its parts.
///
/// # Errors
/// A missing opening or closing boundary, or a header line without `:`.
pub(crate) fn parse(body: &str, boundary: &str) -> Result<Vec<Part>, String> {
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in body.split('\n') {
        let l = line.strip_suffix('\r').unwrap_or(line);
        if l.trim_end() == close {
            if let Some(lines) = current.take() {
                parts.push(part(&lines)?);
            }
            closed = true;
            break;
        }
        if l.trim_end() == open {
            if let Some(lines) = current.take() {
                parts.push(part(&lines)?);
            }
            current = Some(Vec::new());
            continue;
        }
        if let Some(lines) = current.as_mut() {
            lines.push(l);
        }
    }
    if !closed {
        return Err(format!("the multipart body does not end with --{boundary}--"));
    }
    Ok(parts)
}

fn part(lines: &[&str]) -> Result<Part, String> {
    let text = lines.join("\r\n");
    let (headers, body, ok) = split_head(&text);
    ok?;
    Ok(Part { headers, body: body.trim_end_matches(['\r', '\n']).to_owned() })
}

/// An HTTP message inside an `application/http` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpMessage {
    /// `POST /api/data/v9.2/tasks HTTP/1.1` or `HTTP/1.1 204 No Content`.
    pub start: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body (may be empty).
    pub body: String,
}

/// Parses the body of an `application/http` part.
///
/// # Errors
/// An empty message or a header line without `:`.
pub(crate) fn parse_http(text: &str) -> Result<HttpMessage, String> {
    let text = text.trim_start_matches(['\r', '\n']);
    let (start, rest) = text.split_once('\n').unwrap_or((text, ""));
    let start = start.trim_end_matches('\r').trim().to_owned();
    if start.is_empty() {
        return Err("an application/http part has no request line".into());
    }
    let (headers, body, ok) = split_head(rest);
    ok?;
    Ok(HttpMessage { start, headers, body: body.trim_end_matches(['\r', '\n']).to_owned() })
}

/// Writes an HTTP message (CRLF line ends).
pub(crate) fn write_http(m: &HttpMessage) -> String {
    let mut out = String::new();
    out.push_str(&m.start);
    out.push_str("\r\n");
    for (k, v) in &m.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&m.body);
    out
}

/// Writes parts under `boundary`, closing it.
pub(crate) fn write(boundary: &str, parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&format!("--{boundary}\r\n"));
        for (k, v) in &p.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&p.body);
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbatim request of `webapi/execute-batch-operations-using-web-api.md` (LF ends, as
    /// pasted from the docs).
    const DOC: &str = "--batch_22975cad-7f57-410d-be15-6363209367ea
Content-Type: multipart/mixed; boundary=\"changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a\"

--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/tasks HTTP/1.1
Content-Type: application/json; type=entry

{
  \"subject\": \"Task 1 in batch\",
  \"regardingobjectid_account_task@odata.bind\": \"accounts(00000000-0000-0000-0000-000000000001)\"
}
--changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a--

--batch_22975cad-7f57-410d-be15-6363209367ea--
";

    #[test]
    fn parses_the_documented_batch() {
        let b =
            boundary("multipart/mixed; boundary=\"batch_22975cad-7f57-410d-be15-6363209367ea\"")
                .expect("boundary");
        let parts = parse(DOC, &b).expect("parses");
        assert_eq!(parts.len(), 1);
        let cs =
            boundary(header(&parts[0].headers, "content-type").expect("ct")).expect("changeset");
        assert_eq!(cs, "changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a");
        let ops = parse(&parts[0].body, &cs).expect("parses");
        assert_eq!(ops.len(), 1);
        assert_eq!(header(&ops[0].headers, "Content-ID"), Some("1"));
        assert_eq!(header(&ops[0].headers, "content-transfer-encoding"), Some("binary"));
        let m = parse_http(&ops[0].body).expect("http");
        assert_eq!(m.start, "POST /api/data/v9.2/tasks HTTP/1.1");
        assert_eq!(header(&m.headers, "content-type"), Some("application/json; type=entry"));
        let body: serde_json::Value = serde_json::from_str(&m.body).expect("json body");
        assert_eq!(body["subject"], "Task 1 in batch");
    }

    #[test]
    fn written_batches_parse_back() {
        let inner = |n: u32| HttpMessage {
            start: format!("PATCH /api/data/v9.2/x_rows(x_id='{n}') HTTP/1.1"),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!("{{\"x_n\":{n}}}"),
        };
        let op = |n: u32| Part {
            headers: vec![
                ("Content-Type".into(), "application/http".into()),
                ("Content-Transfer-Encoding".into(), "binary".into()),
                ("Content-ID".into(), n.to_string()),
            ],
            body: write_http(&inner(n)),
        };
        let changeset = Part {
            headers: vec![("Content-Type".into(), "multipart/mixed; boundary=changeset_b".into())],
            // The parser drops the CRLF before the next boundary.
            body: write("changeset_b", &[op(1), op(2)]).trim_end().to_owned(),
        };
        let batch = write("batch_a", &[changeset.clone(), op(3)]);
        assert!(batch.contains("\r\n--changeset_b--\r\n"));
        assert!(batch.ends_with("--batch_a--\r\n"));
        let parts = parse(&batch, "batch_a").expect("parses");
        assert_eq!(parts, vec![changeset, op(3)]);
        let ops = parse(&parts[0].body, "changeset_b").expect("parses");
        assert_eq!(ops, vec![op(1), op(2)]);
        assert_eq!(parse_http(&ops[1].body).expect("http"), inner(2));
        // A response status line and an empty body survive too.
        let resp = HttpMessage {
            start: "HTTP/1.1 204 No Content".into(),
            headers: vec![],
            body: String::new(),
        };
        assert_eq!(parse_http(&write_http(&resp)).expect("http"), resp);
    }

    #[test]
    fn malformed_batches_are_errors() {
        assert!(parse("--a\r\nContent-Type: x\r\n\r\nbody\r\n", "a").is_err(), "unclosed");
        assert!(parse("--a\r\nnot a header\r\n\r\n\r\n--a--\r\n", "a").is_err());
        assert_eq!(parse("preamble\r\n--a--\r\n", "a").expect("empty"), vec![]);
        assert!(parse_http("\r\n\r\n").is_err());
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/mixed"), None);
        assert_eq!(boundary("multipart/mixed; boundary=\"\""), None);
        assert_eq!(boundary("Multipart/Mixed; charset=x; Boundary=b1").as_deref(), Some("b1"));
    }
}
