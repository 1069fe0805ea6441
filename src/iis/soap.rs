//! The CDC IIS SOAP envelopes: what goes on the wire and what comes back.
//!
//! Writers ([`submit_request`], [`connectivity_request`] for the client; [`submit_response`],
//! [`connectivity_response`], [`fault_response`] for the simulated IIS) append hand-escaped text
//! to one pre-sized `String`; no DOM. Readers ([`parse_response`], [`parse_request`]) stream the
//! body once with quick-xml and keep only the SOAP `Body`.
//!
//! Invariants:
//! - **Every envelope written is well-formed XML 1.0.** Text is escaped (`&` `<` `>`); CR and LF
//!   become `&#13;` and `&#10;`, because an XML processor turns literal CR and CRLF into LF and
//!   HL7 segments end in CR. Characters XML 1.0 cannot carry at all (the C0 controls other than
//!   TAB, CR and LF, and U+FFFE/U+FFFF) become U+FFFD, so a stray control byte in a record
//!   costs one visible character instead of a malformed request. `"` and `'` stay literal: they
//!   need no escaping in element content, and AIRA's string-scanning reference server decodes
//!   only `&amp;`, `&#13;` and `&#xd;`, so `O&apos;Brien` would reach it verbatim.
//! - **Readers match local names only.** Prefixes and namespaces vary by server (`soap:`,
//!   `env:`, `S:`, none), so `Envelope`, `Body`, `Fault` and the CDC elements are recognised by
//!   local name, SOAP 1.1 and 1.2 alike, 2011 and 2014 names alike. A fault's kind comes from
//!   the element inside `Detail` (`SecurityFault`, …), never from `Code/Value`.
//! - **Returned text is what the server meant, not what XML normalisation makes of it.**
//!   Character references and CDATA are decoded; literal line ends are left as they are (no
//!   CR→LF folding), so an ACK sent in CDATA with bare CRs keeps them.
//! - **Input is hostile.** At most [`MAX_BODY`] bytes, 64 levels of nesting and 10,000
//!   elements in the Body; iteration, never recursion; linear time; no panics; DTD entities are
//!   never expanded. An error quotes at most 200 characters of the body.

use std::fmt;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// The CDC 2011 namespace.
pub const NS_2011: &str = "urn:cdc:iisb:2011";
/// The SOAP 1.2 envelope namespace (the CDC WSDL binds SOAP 1.2 only).
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The SOAP 1.1 envelope namespace (some states answer in SOAP 1.1; readers accept it).
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The largest body the readers accept, in bytes; a client should stop reading there too.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Deepest element nesting the readers accept (a SOAP answer needs 6).
const MAX_DEPTH: usize = 64;
/// Most elements kept from the Body (a SOAP answer needs under 20).
const MAX_ELEMENTS: usize = 10_000;
/// Most characters of the body quoted in an error.
const SNIPPET_CHARS: usize = 100;
/// Most characters of an element name quoted in an error.
const NAME_CHARS: usize = 64;
/// Most characters of a quick-xml error message (which may quote names) in an error.
const PROBLEM_CHARS: usize = 96;
const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
/// What a character XML 1.0 cannot carry is written as.
const REPLACEMENT: &str = "\u{FFFD}";

/// Why a body is not a usable SOAP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The body is empty or only whitespace.
    #[error("empty body where a SOAP envelope was expected")]
    Empty,
    /// The body is longer than [`MAX_BODY`].
    #[error("body of {len} bytes is over the {max}-byte limit for a SOAP message")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not well-formed XML (or not UTF-8).
    #[error("not XML ({problem} at byte {position}); body starts \"{snippet}\"")]
    NotXml {
        /// Byte offset of the problem.
        position: u64,
        /// What is wrong.
        problem: String,
        /// The first characters of the body, whitespace folded.
        snippet: String,
    },
    /// Elements are nested deeper than a SOAP message ever needs.
    #[error("XML nested more than {max} elements deep at byte {position}")]
    TooDeep {
        /// The nesting limit.
        max: usize,
        /// Byte offset where it was exceeded.
        position: u64,
    },
    /// The Body has more elements than a SOAP message ever needs.
    #[error("SOAP Body has more than {max} elements")]
    TooManyElements {
        /// The element limit.
        max: usize,
    },
    /// XML, but not a SOAP envelope with a Body (an HTML error page, for example).
    #[error("not a SOAP envelope ({problem}); body starts \"{snippet}\"")]
    NotSoap {
        /// What is missing.
        problem: String,
        /// The first characters of the body, whitespace folded.
        snippet: String,
    },
    /// The Body holds no element this module knows.
    #[error(
        "the SOAP Body holds no CDC IIS element (first element: {})",
        .first.as_deref().unwrap_or("none")
    )]
    NoAnswer {
        /// Local name of the Body's first element, if it has one.
        first: Option<String>,
    },
    /// A CDC element lacks a child it cannot do without.
    #[error("<{parent}> has no <{child}> element")]
    Missing {
        /// The CDC element, e.g. `submitSingleMessageResponse`.
        parent: String,
        /// The missing child, e.g. `return`.
        child: &'static str,
    },
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `submitSingleMessageResponse/return` (2011) or `SubmitSingleMessageResponse/Hl7Message`
    /// (2014): the ACK text, entity/CDATA decoded, line ends untouched.
    Submit(String),
    /// `connectivityTestResponse/return` (or 2014 `EchoBack`); empty when absent.
    Connectivity(String),
    /// A SOAP Fault.
    Fault(Fault),
}

/// A SOAP Fault as the CDC WSDL shapes it: SOAP's code and reason around a CDC detail element.
///
/// Text fields are trimmed, with runs of whitespace folded to one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which CDC fault element the `Detail` holds.
    pub kind: FaultKind,
    /// The CDC element's `Code`; `None` when absent or not an integer.
    pub code: Option<i64>,
    /// The CDC element's `Reason` (`Security`, `MessageTooLarge`, … or free text).
    pub reason: String,
    /// The CDC element's `Detail`; for [`FaultKind::Other`] all text in the SOAP `Detail`;
    /// for a 2014 `MessageTooLargeFault`, its `Size` and `MaxSize`.
    pub detail: String,
    /// SOAP 1.2 `Code/Value` or SOAP 1.1 `faultcode`, prefix stripped (`Sender`, `Client`, …).
    pub soap_code: String,
    /// SOAP 1.2 `Reason/Text` (the first) or SOAP 1.1 `faultstring`.
    pub soap_reason: String,
}

/// The CDC fault elements, by the local name of the element inside the SOAP `Detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `SecurityFault`: bad credentials; retrying will not help.
    Security,
    /// `MessageTooLargeFault`: the message is too big, or holds more than one HL7 message.
    MessageTooLarge,
    /// `fault` (the WSDL's UnknownFault): anything else went wrong on the server.
    Unknown,
    /// `UnsupportedOperationFault`: the server does not offer the operation.
    UnsupportedOperation,
    /// A Fault whose Detail has none of the CDC elements.
    Other,
}

impl FaultKind {
    fn from_element(name: &str) -> Option<Self> {
        Some(match name {
            "SecurityFault" => Self::Security,
            "MessageTooLargeFault" => Self::MessageTooLarge,
            "fault" => Self::Unknown,
            "UnsupportedOperationFault" => Self::UnsupportedOperation,
            _ => return None,
        })
    }

    /// The CDC detail element and the WSDL's fixed `Reason`, if the kind has them.
    fn element(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            Self::Security => Some(("SecurityFault", Some("Security"))),
            Self::MessageTooLarge => Some(("MessageTooLargeFault", Some("MessageTooLarge"))),
            Self::UnsupportedOperation => {
                Some(("UnsupportedOperationFault", Some("UnsupportedOperation")))
            }
            Self::Unknown => Some(("fault", None)),
            Self::Other => None,
        }
    }
}

/// What a client asked (read by the simulated IIS).
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `submitSingleMessage` (2011) or `SubmitSingleMessageRequest` (2014).
    Submit {
        /// `username`; `None` when absent or `xsi:nil`.
        username: Option<String>,
        /// `password`; `None` when absent or `xsi:nil`. Never printed by `Debug`.
        password: Option<String>,
        /// `facilityID`; `None` when absent or `xsi:nil`.
        facility_id: Option<String>,
        /// `hl7Message`, entity/CDATA decoded, line ends untouched.
        hl7: String,
    },
    /// `connectivityTest` (2011) or `ConnectivityTestRequest` (2014).
    Connectivity {
        /// `echoBack`; empty when absent or `xsi:nil`.
        echo: String,
    },
    /// The local name of a Body element we do not serve.
    Unsupported(String),
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Submit { username, password, facility_id, hl7 } => f
                .debug_struct("Submit")
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "***"))
                .field("facility_id", facility_id)
                .field("hl7", hl7)
                .finish(),
            Self::Connectivity { echo } => {
                f.debug_struct("Connectivity").field("echo", echo).finish()
            }
            Self::Unsupported(name) => f.debug_tuple("Unsupported").field(name).finish(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writers

/// Returns the SOAP 1.2 Content-Type for `action` (`submitSingleMessage` or
/// `connectivityTest`): `application/soap+xml; charset=UTF-8; action="urn:cdc:iisb:2011:<action>"`.
pub fn content_type(action: &str) -> String {
    format!("application/soap+xml; charset=UTF-8; action=\"{NS_2011}:{action}\"")
}

/// Builds a SOAP 1.2 `submitSingleMessage` envelope; `facility_id` `None` omits `facilityID`.
///
/// Text is escaped as the module documents (CR → `&#13;`, `&` → `&amp;`, …; characters XML
/// cannot carry → U+FFFD).
pub fn submit_request(
    username: &str,
    password: &str,
    facility_id: Option<&str>,
    hl7: &str,
) -> String {
    let mut out = String::with_capacity(submit_capacity(username, password, facility_id, hl7));
    request_open(&mut out, "submitSingleMessage");
    element(&mut out, "username", username);
    element(&mut out, "password", password);
    if let Some(facility_id) = facility_id {
        element(&mut out, "facilityID", facility_id);
    }
    element(&mut out, "hl7Message", hl7);
    request_close(&mut out, "submitSingleMessage");
    out
}

/// Markup around the text of a submit request, rounded up.
const SUBMIT_MARKUP: usize = 320;

/// The capacity [`submit_request`] reserves: markup plus the text plus 1/8 for escapes (an HL7
/// message adds 4 bytes per segment for `&#13;` and 4 for the `&` of MSH-2).
fn submit_capacity(username: &str, password: &str, facility: Option<&str>, hl7: &str) -> usize {
    let text = username.len() + password.len() + facility.map_or(0, str::len) + hl7.len();
    SUBMIT_MARKUP + text + text / 8
}

/// Builds a SOAP 1.2 `connectivityTest` envelope carrying `echo` as `echoBack`.
pub fn connectivity_request(echo: &str) -> String {
    let mut out = String::with_capacity(SUBMIT_MARKUP + echo.len() + echo.len() / 8);
    request_open(&mut out, "connectivityTest");
    element(&mut out, "echoBack", echo);
    request_close(&mut out, "connectivityTest");
    out
}

/// Builds the simulated IIS's `submitSingleMessageResponse`: SOAP 1.2 in default namespaces as
/// AIRA's reference server writes it, the ACK in CDATA unless it contains `]]>` (then escaped).
///
/// CDATA carries CR literally, which a conformant XML parser folds to LF; clients must accept
/// either line end, as [`parse_response`] and the ACK parser do.
pub fn submit_response(ack: &str) -> String {
    let mut out = String::with_capacity(SUBMIT_MARKUP + ack.len() + ack.len() / 8);
    response_open(&mut out);
    out.push_str("<submitSingleMessageResponse xmlns=\"");
    out.push_str(NS_2011);
    out.push_str("\"><return>");
    if ack.contains("]]>") {
        write_text(&mut out, ack, Mode::Escape);
    } else {
        out.push_str("<![CDATA[");
        write_text(&mut out, ack, Mode::Cdata);
        out.push_str("]]>");
    }
    out.push_str("</return></submitSingleMessageResponse>");
    response_close(&mut out);
    out
}

/// Builds the simulated IIS's `connectivityTestResponse` with `text` as `return`.
pub fn connectivity_response(text: &str) -> String {
    let mut out = String::with_capacity(SUBMIT_MARKUP + text.len() + text.len() / 8);
    response_open(&mut out);
    out.push_str("<connectivityTestResponse xmlns=\"");
    out.push_str(NS_2011);
    out.push_str("\">");
    element(&mut out, "return", text);
    out.push_str("</connectivityTestResponse>");
    response_close(&mut out);
    out
}

/// Builds a SOAP 1.2 Fault carrying a CDC fault element.
///
/// `Code/Value` is `env:Sender` (Security, MessageTooLarge, UnsupportedOperation) or
/// `env:Receiver` (Unknown, Other); `Reason/Text` is `reason`. `Detail` holds the CDC element
/// with `Code` = `code`, `Reason` = the WSDL's fixed string (`Security`, `MessageTooLarge`,
/// `UnsupportedOperation`; `reason` for Unknown) and `Detail` = `detail`. For
/// [`FaultKind::Other`] `Detail` holds just the text `detail` and `code` is not written.
pub fn fault_response(kind: FaultKind, code: i64, reason: &str, detail: &str) -> String {
    let text = 2 * reason.len() + detail.len();
    let mut out = String::with_capacity(2 * SUBMIT_MARKUP + text + text / 8);
    out.push_str(XML_DECL);
    out.push_str("<Envelope xmlns=\"");
    out.push_str(SOAP12_NS);
    out.push_str("\" xmlns:env=\"");
    out.push_str(SOAP12_NS);
    out.push_str("\"><Body><Fault><Code><Value>");
    out.push_str(match kind {
        FaultKind::Security | FaultKind::MessageTooLarge | FaultKind::UnsupportedOperation => {
            "env:Sender"
        }
        FaultKind::Unknown | FaultKind::Other => "env:Receiver",
    });
    out.push_str("</Value></Code><Reason><Text xml:lang=\"en\">");
    write_text(&mut out, reason, Mode::Escape);
    out.push_str("</Text></Reason><Detail>");
    match kind.element() {
        Some((name, fixed)) => {
            out.push('<');
            out.push_str(name);
            out.push_str(" xmlns=\"");
            out.push_str(NS_2011);
            out.push_str("\"><Code>");
            out.push_str(&code.to_string());
            out.push_str("</Code>");
            element(&mut out, "Reason", fixed.unwrap_or(reason));
            element(&mut out, "Detail", detail);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        None => write_text(&mut out, detail, Mode::Escape),
    }
    out.push_str("</Detail></Fault></Body></Envelope>");
    out
}

fn request_open(out: &mut String, operation: &str) {
    out.push_str(XML_DECL);
    out.push_str("<soap:Envelope xmlns:soap=\"");
    out.push_str(SOAP12_NS);
    out.push_str("\"><soap:Body><");
    out.push_str(operation);
    out.push_str(" xmlns=\"");
    out.push_str(NS_2011);
    out.push_str("\">");
}

fn request_close(out: &mut String, operation: &str) {
    out.push_str("</");
    out.push_str(operation);
    out.push_str("></soap:Body></soap:Envelope>");
}

fn response_open(out: &mut String) {
    out.push_str(XML_DECL);
    out.push_str("<Envelope xmlns=\"");
    out.push_str(SOAP12_NS);
    out.push_str("\"><Header/><Body>");
}

fn response_close(out: &mut String) {
    out.push_str("</Body></Envelope>");
}

/// Writes `<name>text</name>`, `text` escaped.
fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    write_text(out, text, Mode::Escape);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Element content: markup characters and line ends escaped.
    Escape,
    /// Inside `<![CDATA[…]]>` (the caller has ruled out `]]>`): everything literal.
    Cdata,
}

/// Appends `s` as XML character data; characters XML 1.0 cannot carry become U+FFFD.
fn write_text(out: &mut String, s: &str, mode: Mode) {
    let bytes = s.as_bytes();
    let escape = mode == Mode::Escape;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let (replacement, len) = match bytes[i] {
            b'&' if escape => ("&amp;", 1),
            b'<' if escape => ("&lt;", 1),
            b'>' if escape => ("&gt;", 1),
            b'\r' if escape => ("&#13;", 1),
            b'\n' if escape => ("&#10;", 1),
            b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            0x00..=0x1F => (REPLACEMENT, 1),
            // U+FFFE and U+FFFF: EF BF BE / EF BF BF.
            0xEF if matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])) => {
                (REPLACEMENT, 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        // `i` is at an ASCII byte or a lead byte, so both slices fall on char boundaries.
        out.push_str(&s[copied..i]);
        out.push_str(replacement);
        i += len;
        copied = i;
    }
    out.push_str(&s[copied..]);
}

// ---------------------------------------------------------------------------------------------
// Readers

/// Parses a server's answer.
///
/// Tolerant of everything servers are seen to vary: namespace prefixes (or none), whitespace,
/// an XML declaration or none, a Header or none, SOAP 1.1 (`faultcode`, `faultstring`,
/// `detail`) or 1.2, CDATA or escaped text (`&#13;`, `&#xD;`, `&#xd;`, `&amp;`, …), 2014
/// element names, unknown extra elements. The first known element in the Body wins.
///
/// # Errors
///
/// [`Error::Empty`], [`Error::TooLarge`], [`Error::NotXml`] (also for invalid UTF-8 and a
/// truncated document), [`Error::TooDeep`], [`Error::TooManyElements`], [`Error::NotSoap`],
/// [`Error::NoAnswer`], or [`Error::Missing`] for a submit response without `return`.
pub fn parse_response(body: &[u8]) -> Result<Response> {
    let mut tree = Tree::read(body)?;
    let mut first = None;
    let body_children: Vec<usize> = tree.children(0).collect();
    for el in body_children {
        match tree.name(el) {
            name @ ("submitSingleMessageResponse" | "SubmitSingleMessageResponse") => {
                let ret = tree
                    .child(el, &["return", "Hl7Message"])
                    .ok_or_else(|| Error::Missing { parent: name.to_owned(), child: "return" })?;
                return Ok(Response::Submit(tree.take_text(ret).unwrap_or_default()));
            }
            "connectivityTestResponse" | "ConnectivityTestResponse" => {
                let ret = tree.child(el, &["return", "EchoBack"]);
                let text = ret.and_then(|r| tree.take_text(r)).unwrap_or_default();
                return Ok(Response::Connectivity(text));
            }
            "Fault" => return Ok(Response::Fault(tree.fault(el))),
            name => {
                if first.is_none() {
                    first = Some(clip(name, NAME_CHARS));
                }
            }
        }
    }
    Err(Error::NoAnswer { first })
}

/// Parses a client's request (the simulated IIS's side), as tolerantly as [`parse_response`].
///
/// The Body's first element is the operation; one we do not serve is
/// [`Request::Unsupported`].
///
/// # Errors
///
/// As [`parse_response`]; [`Error::NoAnswer`] for an empty Body; [`Error::Missing`] for a
/// submit without `hl7Message`.
pub fn parse_request(body: &[u8]) -> Result<Request> {
    let mut tree = Tree::read(body)?;
    let op = tree.children(0).next().ok_or(Error::NoAnswer { first: None })?;
    let optional = |tree: &mut Tree, names: &[&str]| {
        let el = tree.child(op, names)?;
        tree.take_text(el)
    };
    match tree.name(op) {
        name @ ("submitSingleMessage" | "SubmitSingleMessageRequest") => {
            let parent = name.to_owned();
            let hl7 = tree
                .child(op, &["hl7Message", "Hl7Message"])
                .ok_or(Error::Missing { parent, child: "hl7Message" })?;
            Ok(Request::Submit {
                username: optional(&mut tree, &["username", "Username"]),
                password: optional(&mut tree, &["password", "Password"]),
                facility_id: optional(&mut tree, &["facilityID", "FacilityID"]),
                hl7: tree.take_text(hl7).unwrap_or_default(),
            })
        }
        "connectivityTest" | "ConnectivityTestRequest" => Ok(Request::Connectivity {
            echo: optional(&mut tree, &["echoBack", "EchoBack"]).unwrap_or_default(),
        }),
        other => Ok(Request::Unsupported(other.to_owned())),
    }
}

/// One element inside the SOAP Body.
struct Node {
    /// Local name.
    name: String,
    /// The element's own character data, decoded (text of children is theirs).
    text: String,
    /// `xsi:nil="true"`.
    nil: bool,
    /// One past the index of its last descendant: its subtree is `index..end`.
    end: usize,
}

/// The SOAP Body and everything in it, in document order; `nodes[0]` is the Body.
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Reads `body` up to the end of the root element, keeping only the (first) Body.
    fn read(body: &[u8]) -> Result<Self> {
        if body.len() > MAX_BODY {
            return Err(Error::TooLarge { len: body.len(), max: MAX_BODY });
        }
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Empty);
        }
        let text = std::str::from_utf8(body)
            .map_err(|e| not_xml(body, e.valid_up_to() as u64, "invalid UTF-8".to_owned()))?;
        let mut reader = Reader::from_str(text);
        reader.config_mut().expand_empty_elements = true;

        let mut nodes: Vec<Node> = Vec::new();
        // Indices of the open nodes inside the Body; empty outside it.
        let mut open: Vec<usize> = Vec::new();
        let mut depth = 0usize;
        let mut seen_root = false;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| not_xml(body, reader.error_position(), e.to_string()))?;
            match event {
                Event::Start(start) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error::TooDeep {
                            max: MAX_DEPTH,
                            position: reader.buffer_position(),
                        });
                    }
                    let name = local_name(&start);
                    if depth == 1 {
                        if name != "Envelope" {
                            let problem = format!("root element is <{}>", clip(&name, NAME_CHARS));
                            return Err(Error::NotSoap { problem, snippet: snippet(body) });
                        }
                        seen_root = true;
                    } else if (depth == 2 && name == "Body" && nodes.is_empty()) || !open.is_empty()
                    {
                        if nodes.len() == MAX_ELEMENTS {
                            return Err(Error::TooManyElements { max: MAX_ELEMENTS });
                        }
                        open.push(nodes.len());
                        nodes.push(Node { nil: is_nil(&start), name, text: String::new(), end: 0 });
                    }
                }
                Event::End(_) => {
                    if let Some(index) = open.pop() {
                        let end = nodes.len();
                        if let Some(node) = nodes.get_mut(index) {
                            node.end = end;
                        }
                    }
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                Event::Text(raw) => {
                    let raw = std::str::from_utf8(&raw)
                        .map_err(|_| not_xml(body, reader.buffer_position(), "bad text".into()))?;
                    if let Some(node) = open.last().and_then(|&i| nodes.get_mut(i)) {
                        unescape_into(&mut node.text, raw);
                    } else if depth == 0 && !raw.trim().is_empty() {
                        let problem = "text outside any element".to_owned();
                        return Err(not_xml(body, reader.buffer_position(), problem));
                    }
                }
                Event::CData(raw) => {
                    if let Some(node) = open.last().and_then(|&i| nodes.get_mut(i)) {
                        node.text.push_str(&String::from_utf8_lossy(&raw));
                    } else if depth == 0 {
                        let problem = "CDATA outside any element".to_owned();
                        return Err(not_xml(body, reader.buffer_position(), problem));
                    }
                }
                Event::Eof => {
                    let problem = if seen_root {
                        "document ends inside an element"
                    } else {
                        "no root element"
                    };
                    return Err(not_xml(body, reader.buffer_position(), problem.to_owned()));
                }
                // Nothing to read in declarations, comments and processing instructions; `Empty`
                // arrives as Start + End (expand_empty_elements). A DOCTYPE's entities are never
                // expanded: references to them stay literal.
                Event::Empty(_)
                | Event::Decl(_)
                | Event::PI(_)
                | Event::Comment(_)
                | Event::DocType(_) => {}
            }
        }
        if nodes.is_empty() {
            let problem = "Envelope has no Body".to_owned();
            return Err(Error::NotSoap { problem, snippet: snippet(body) });
        }
        Ok(Self { nodes })
    }

    fn name(&self, i: usize) -> &str {
        self.nodes.get(i).map_or("", |n| n.name.as_str())
    }

    /// The children of `i`, in document order.
    fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.nodes.get(i).map_or(0, |n| n.end);
        let mut c = i + 1;
        std::iter::from_fn(move || {
            let node = self.nodes.get(c).filter(|_| c < end)?;
            let this = c;
            // A closed node's subtree ends after it; `max` only guards progress.
            c = node.end.max(c + 1);
            Some(this)
        })
    }

    /// The first child of `i` named one of `names`.
    fn child(&self, i: usize, names: &[&str]) -> Option<usize> {
        self.children(i).find(|&c| names.contains(&self.name(c)))
    }

    /// Moves out the text of `i`; `None` for `xsi:nil`.
    fn take_text(&mut self, i: usize) -> Option<String> {
        let node = self.nodes.get_mut(i)?;
        (!node.nil).then(|| std::mem::take(&mut node.text))
    }

    /// The text of `i` trimmed, whitespace runs folded to one space.
    fn clean_text(&self, i: Option<usize>) -> String {
        i.and_then(|i| self.nodes.get(i)).map_or_else(String::new, |n| fold(&n.text))
    }

    /// The text of `i` and all its descendants, folded.
    fn all_text(&self, i: usize) -> String {
        let end = self.nodes.get(i).map_or(i, |n| n.end);
        let mut words = Vec::new();
        for node in self.nodes.get(i..end).unwrap_or_default() {
            words.extend(node.text.split_whitespace());
        }
        words.join(" ")
    }

    fn fault(&self, f: usize) -> Fault {
        let value = self.child(f, &["Code"]).and_then(|c| self.child(c, &["Value"]));
        let soap_code = self.clean_text(value.or_else(|| self.child(f, &["faultcode"])));
        let soap_code = match soap_code.rsplit_once(':') {
            Some((_, local)) => local.to_owned(),
            None => soap_code,
        };
        let text = self.child(f, &["Reason"]).and_then(|r| self.child(r, &["Text"]));
        let soap_reason = self.clean_text(text.or_else(|| self.child(f, &["faultstring"])));

        let detail = self.child(f, &["Detail", "detail"]);
        let cdc = detail.and_then(|d| {
            self.children(d).find_map(|c| Some((FaultKind::from_element(self.name(c))?, c)))
        });
        let Some((kind, el)) = cdc else {
            return Fault {
                kind: FaultKind::Other,
                code: None,
                reason: String::new(),
                detail: detail.map(|d| self.all_text(d)).unwrap_or_default(),
                soap_code,
                soap_reason,
            };
        };
        let code = self.clean_text(self.child(el, &["Code"])).parse().ok();
        let reason = self.clean_text(self.child(el, &["Reason"]));
        let detail = match self.child(el, &["Detail"]) {
            Some(d) => self.clean_text(Some(d)),
            // 2014: MessageTooLargeFault { Size, MaxSize }; SecurityFault is empty.
            None => {
                let size = self.clean_text(self.child(el, &["Size"]));
                let max = self.clean_text(self.child(el, &["MaxSize"]));
                if size.is_empty() && max.is_empty() {
                    String::new()
                } else {
                    format!("size {size}, max size {max}")
                }
            }
        };
        Fault { kind, code, reason, detail, soap_code, soap_reason }
    }
}

fn local_name(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref()).into_owned()
}

/// Whether the element carries `xsi:nil="true"` (any prefix).
///
/// Without quick-xml's duplicate-attribute check: it compares each attribute with every one
/// before it (RUSTSEC-2026-0194), so one start tag of 4 MiB of attributes held a worker for
/// minutes; a duplicate changes nothing here.
fn is_nil(start: &BytesStart<'_>) -> bool {
    start.attributes().with_checks(false).filter_map(std::result::Result::ok).any(|a| {
        a.key.local_name().as_ref() == b"nil" && matches!(a.value.as_ref(), b"true" | b"1")
    })
}

/// Appends `raw` with entity and character references decoded. Unknown or malformed references
/// stay literal (a stray `&nbsp;` should not cost the whole answer); the lookahead for `;` is
/// bounded, so the scan stays linear.
fn unescape_into(out: &mut String, raw: &str) {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let window = &after.as_bytes()[..after.len().min(12)];
        let decoded = window
            .iter()
            .position(|&b| b == b';')
            .and_then(|semi| Some((semi, decode_reference(after.get(..semi)?)?)));
        match decoded {
            Some((semi, c)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// Decodes the name between `&` and `;`.
fn decode_reference(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()?
                }
                Some(_) => return None,
                None if number.bytes().all(|b| b.is_ascii_digit()) => number.parse().ok()?,
                None => return None,
            };
            char::from_u32(code)?
        }
    })
}

/// Trims and folds whitespace runs to one space.
fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The start of the body for an error message: lossy UTF-8, whitespace folded, control
/// characters shown as U+FFFD, clipped.
fn snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(SNIPPET_CHARS * 4)];
    let folded = fold(&String::from_utf8_lossy(head));
    let shown: String =
        folded.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    clip(&shown, SNIPPET_CHARS)
}

fn not_xml(body: &[u8], position: u64, problem: String) -> Error {
    Error::NotXml { position, problem: clip(&problem, PROBLEM_CHARS), snippet: snippet(body) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // Verbatim examples from research/cdc-vxu.md §2.3 (NIST hit-iz-tool resources).

    const NIST_SUBMIT_REQUEST: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
   <Header />
   <Body>
      <submitSingleMessage xmlns="urn:cdc:iisb:2011">
         <username>leonidas</username>
         <password>Spartans300!</password>
         <facilityID>EHR1234</facilityID>
         <hl7Message>MSH|^~\&amp;|Test EHR Application|X68||NIST Test Iz Reg|201207010822||VXU^V04^VXU_V04|NIST-IZ-007.00|P|2.5.1|||AL|ER&#xD;PID|1||MR-99922^^^NIST MPI^MR||Montgomery^Lewis^^^^^L||20010821|M&#xD;ORC|RE||IZ-783276^NDA&#xD;RXA|0|1|20110215||118^HPV^CVX|999|||01^Historical information - source unspecified^NIP001</hl7Message>
      </submitSingleMessage>
   </Body>
</Envelope>"#;

    const NIST_SUBMIT_RESPONSE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
    <Header />
    <Body>
      <submitSingleMessageResponse xmlns="urn:cdc:iisb:2011">
        <return><![CDATA[MSH|^~|&|IISSUT|IISSUT|NISTEHR||<date/timeMSG>||ACK^V04^ACK|<msgControlID>|P|2.5.1|||NE]]></return>
        </submitSingleMessageResponse>
    </Body>
</Envelope>"#;

    const NIST_CONNECTIVITY_REQUEST: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
  <Header />
  <Body>
    <connectivityTest xmlns="urn:cdc:iisb:2011">
      <echoBack>Hello world!</echoBack>   
    </connectivityTest>
  </Body>
</Envelope>"#;

    const NIST_CONNECTIVITY_RESPONSE: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
  <Body>
    <connectivityTestResponse xmlns="urn:cdc:iisb:2011">
      <return>You sent: Hello world!</return>   
    </connectivityTestResponse>
  </Body>
</Envelope>"#;

    const NIST_SECURITY_FAULT: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
   <Body>
      <Fault xmlns:ns4="http://schemas.xmlsoap.org/soap/envelope/">
         <Code>
            <Value>Sender</Value>
         </Code>
         <Reason>
            <Text xml:lang="en">Security Message Here</Text>
         </Reason>
         <Detail>
            <SecurityFault xmlns="urn:cdc:iisb:2011">
               <Code>10</Code>
               <Reason xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">Security</Reason>
               <Detail>Invalid Username or Password</Detail>
            </SecurityFault>
         </Detail>
      </Fault>
   </Body>
</Envelope>"#;

    const NIST_MESSAGE_TOO_LARGE_FAULT: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:junk="urn:foo:bar">
  <Body>
    <Fault>
      <Code>
        <Value>Sender</Value>
      </Code>
      <Reason>
        <Text xml:lang="en">Message Too Large Message Here</Text>
      </Reason>
      <Detail>
        <MessageTooLargeFault xmlns="urn:cdc:iisb:2011">
          <Code>1313</Code>
          <Reason xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">MessageTooLarge</Reason>
          <Detail> More than one HL7 message was submitted. Please submit one and only one HL7
            message per transaction </Detail>
        </MessageTooLargeFault>
      </Detail>
    </Fault>
  </Body>
</Envelope>"#;

    const NIST_UNKNOWN_FAULT: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
   <Body>
      <Fault xmlns:ns4="http://schemas.xmlsoap.org/soap/envelope/">
         <Code>
            <Value>Sender</Value>
         </Code>
         <Reason>
            <Text xml:lang="en">Unknown Fault Message Here</Text>
         </Reason>
         <Detail>
            <fault xmlns="urn:cdc:iisb:2011">
               <Code>54353</Code>
               <Reason xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">My Reason</Reason>
               <Detail>An unexpected problem occured</Detail>
            </fault>
         </Detail>
      </Fault>
   </Body>
</Envelope>"#;

    const NIST_UNSUPPORTED_OPERATION_FAULT: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope">
   <Body>
      <Fault xmlns:ns4="http://schemas.xmlsoap.org/soap/envelope/">
         <Code>
            <Value>Sender</Value>
         </Code>
         <Reason>
            <Text xml:lang="en">Unsupported Operation Fault Message Here</Text>
         </Reason>
         <Detail>
            <UnsupportedOperationFault xmlns="urn:cdc:iisb:2011">
               <Code>8675309</Code>
               <Reason xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">UnsupportedOperation</Reason>
               <Detail>This Operation is not supported</Detail>
            </UnsupportedOperationFault>
         </Detail>
      </Fault>
   </Body>
</Envelope>"#;

    /// The HL7 in [`NIST_SUBMIT_REQUEST`], decoded.
    const NIST_VXU: &str = "MSH|^~\\&|Test EHR Application|X68||NIST Test Iz Reg|201207010822||\
        VXU^V04^VXU_V04|NIST-IZ-007.00|P|2.5.1|||AL|ER\rPID|1||MR-99922^^^NIST MPI^MR||\
        Montgomery^Lewis^^^^^L||20010821|M\rORC|RE||IZ-783276^NDA\rRXA|0|1|20110215||\
        118^HPV^CVX|999|||01^Historical information - source unspecified^NIP001";

    const ACK: &str = "MSH|^~\\&|IIS|ST|EHR|X68|20240101120000-0500||ACK^V04^ACK|A1|P|2.5.1|||NE|NE\r\
        MSA|AA|NIST-IZ-007.00\r";

    fn fault(
        kind: FaultKind,
        code: Option<i64>,
        reason: &str,
        detail: &str,
        soap_code: &str,
        soap_reason: &str,
    ) -> Response {
        Response::Fault(Fault {
            kind,
            code,
            reason: reason.into(),
            detail: detail.into(),
            soap_code: soap_code.into(),
            soap_reason: soap_reason.into(),
        })
    }

    /// What XML 1.0 can carry; the writers turn everything else into U+FFFD.
    fn xml_safe(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' => c,
                '\u{10000}'.. => c,
                _ => '\u{FFFD}',
            })
            .collect()
    }

    /// An independent check that nothing XML 1.0 forbids is in the output, and that CR and LF
    /// never appear raw outside CDATA.
    fn assert_xml_chars(xml: &str) {
        assert_eq!(xml_safe(xml), xml, "XML-illegal character written");
    }

    fn envelope(prefix: &str, ns: &str, body: &str) -> String {
        let p = if prefix.is_empty() { String::new() } else { format!("{prefix}:") };
        let decl = if prefix.is_empty() { "" } else { ":" };
        format!(
            "<{p}Envelope xmlns{decl}{prefix}=\"{ns}\"><{p}Header/><{p}Body>{body}</{p}Body></{p}Envelope>"
        )
    }

    // --- the verbatim examples ---------------------------------------------------------------

    #[test]
    fn nist_submit_request() -> Result<()> {
        let expected = Request::Submit {
            username: Some("leonidas".into()),
            password: Some("Spartans300!".into()),
            facility_id: Some("EHR1234".into()),
            hl7: NIST_VXU.into(),
        };
        assert_eq!(parse_request(NIST_SUBMIT_REQUEST.as_bytes())?, expected);
        Ok(())
    }

    #[test]
    fn nist_submit_response_cdata() -> Result<()> {
        assert_eq!(
            parse_response(NIST_SUBMIT_RESPONSE.as_bytes())?,
            Response::Submit(
                "MSH|^~|&|IISSUT|IISSUT|NISTEHR||<date/timeMSG>||ACK^V04^ACK|<msgControlID>|P|\
                 2.5.1|||NE"
                    .into()
            )
        );
        Ok(())
    }

    #[test]
    fn nist_connectivity() -> Result<()> {
        assert_eq!(
            parse_request(NIST_CONNECTIVITY_REQUEST.as_bytes())?,
            Request::Connectivity { echo: "Hello world!".into() }
        );
        assert_eq!(
            parse_response(NIST_CONNECTIVITY_RESPONSE.as_bytes())?,
            Response::Connectivity("You sent: Hello world!".into())
        );
        Ok(())
    }

    #[test]
    fn nist_faults() -> Result<()> {
        let cases = [
            (
                NIST_SECURITY_FAULT,
                fault(
                    FaultKind::Security,
                    Some(10),
                    "Security",
                    "Invalid Username or Password",
                    "Sender",
                    "Security Message Here",
                ),
            ),
            (
                NIST_MESSAGE_TOO_LARGE_FAULT,
                fault(
                    FaultKind::MessageTooLarge,
                    Some(1313),
                    "MessageTooLarge",
                    "More than one HL7 message was submitted. Please submit one and only one \
                     HL7 message per transaction",
                    "Sender",
                    "Message Too Large Message Here",
                ),
            ),
            (
                NIST_UNKNOWN_FAULT,
                fault(
                    FaultKind::Unknown,
                    Some(54353),
                    "My Reason",
                    "An unexpected problem occured",
                    "Sender",
                    "Unknown Fault Message Here",
                ),
            ),
            (
                NIST_UNSUPPORTED_OPERATION_FAULT,
                fault(
                    FaultKind::UnsupportedOperation,
                    Some(8675309),
                    "UnsupportedOperation",
                    "This Operation is not supported",
                    "Sender",
                    "Unsupported Operation Fault Message Here",
                ),
            ),
        ];
        for (xml, expected) in cases {
            assert_eq!(parse_response(xml.as_bytes())?, expected);
        }
        Ok(())
    }

    // --- variants ----------------------------------------------------------------------------

    #[test]
    fn any_envelope_prefix_and_cdc_prefix() -> Result<()> {
        for prefix in ["soap", "env", "S", "soapenv", "SOAP-ENV", ""] {
            let body = "<ns2:submitSingleMessageResponse xmlns:ns2=\"urn:cdc:iisb:2011\">\
                <ns2:return>MSH|^~\\&amp;|IIS&#13;MSA|AA|1&#13;</ns2:return>\
                </ns2:submitSingleMessageResponse>";
            let xml = envelope(prefix, SOAP12_NS, body);
            assert_eq!(
                parse_response(xml.as_bytes())?,
                Response::Submit("MSH|^~\\&|IIS\rMSA|AA|1\r".into()),
                "prefix {prefix:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn soap11_fault_keys_on_detail_element() -> Result<()> {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <soap:Fault>
      <faultcode>soap:Server</faultcode>
      <faultstring>  Access
         denied </faultstring>
      <detail>
        <SecurityFault xmlns="urn:cdc:iisb:2011"><Code>10</Code><Reason>Security</Reason><Detail>bad password</Detail></SecurityFault>
      </detail>
    </soap:Fault>
  </soap:Body>
</soap:Envelope>"#;
        // faultcode says Server, which alone would look retryable; the Detail says Security.
        let expected = fault(
            FaultKind::Security,
            Some(10),
            "Security",
            "bad password",
            "Server",
            "Access denied",
        );
        assert_eq!(parse_response(xml.as_bytes())?, expected);
        Ok(())
    }

    #[test]
    fn soap11_submit_response() -> Result<()> {
        let xml = format!(
            "<S:Envelope xmlns:S=\"{SOAP11_NS}\"><S:Body><submitSingleMessageResponse \
             xmlns=\"urn:cdc:iisb:2011\"><return>MSA|AE|1&#xd;ERR|||207</return>\
             </submitSingleMessageResponse></S:Body></S:Envelope>"
        );
        assert_eq!(parse_response(xml.as_bytes())?, Response::Submit("MSA|AE|1\rERR|||207".into()));
        Ok(())
    }

    #[test]
    fn whitespace_no_declaration_and_character_references() -> Result<()> {
        // No XML declaration, newlines and indentation everywhere, every spelling of CR.
        let xml = "\n\n  <env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\">\n\
            \t<env:Body>\n\
            \t\t<submitSingleMessageResponse xmlns=\"urn:cdc:iisb:2011\">\n\
            \t\t\t<return>MSH|^~\\&amp;|A&#xD;MSA|AA|1&#xd;ERR|&#13;X&lt;&gt;&quot;&apos;&#x1F600;</return>\n\
            \t\t</submitSingleMessageResponse>\n\t</env:Body>\n</env:Envelope>\n";
        assert_eq!(
            parse_response(xml.as_bytes())?,
            Response::Submit("MSH|^~\\&|A\rMSA|AA|1\rERR|\rX<>\"'😀".into())
        );
        Ok(())
    }

    #[test]
    fn literal_line_ends_are_left_alone() -> Result<()> {
        // A conformant XML processor would fold these to LF; the ACK parser wants them as sent.
        let body = "<submitSingleMessageResponse xmlns=\"urn:cdc:iisb:2011\"><return>\
            <![CDATA[MSH|A\rMSA|AA\r\n]]>tail\r</return></submitSingleMessageResponse>";
        let xml = envelope("soap", SOAP12_NS, body);
        assert_eq!(
            parse_response(xml.as_bytes())?,
            Response::Submit("MSH|A\rMSA|AA\r\ntail\r".into())
        );
        Ok(())
    }

    #[test]
    fn unknown_references_stay_literal() -> Result<()> {
        let body = "<connectivityTestResponse xmlns=\"urn:cdc:iisb:2011\"><return>a&nbsp;b &amp c \
            &#xZZ; &#; &#1114112; &;&amp;</return></connectivityTestResponse>";
        let xml = envelope("soap", SOAP12_NS, body);
        assert_eq!(
            parse_response(xml.as_bytes())?,
            Response::Connectivity("a&nbsp;b &amp c &#xZZ; &#; &#1114112; &;&".into())
        );
        Ok(())
    }

    #[test]
    fn names_of_the_2014_wsdl() -> Result<()> {
        let ns = "xmlns=\"urn:cdc:iisb:2014\"";
        let submit = envelope(
            "soap",
            SOAP12_NS,
            &format!(
                "<SubmitSingleMessageResponse {ns}><Hl7Message>MSA|AA|1&#13;</Hl7Message></SubmitSingleMessageResponse>"
            ),
        );
        assert_eq!(parse_response(submit.as_bytes())?, Response::Submit("MSA|AA|1\r".into()));

        let echo = envelope(
            "soap",
            SOAP12_NS,
            &format!(
                "<ConnectivityTestResponse {ns}><EchoBack>hi</EchoBack></ConnectivityTestResponse>"
            ),
        );
        assert_eq!(parse_response(echo.as_bytes())?, Response::Connectivity("hi".into()));

        let too_large = envelope(
            "soap",
            SOAP12_NS,
            &format!(
                "<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code>\
                 <soap:Reason><soap:Text xml:lang=\"en\">too big</soap:Text></soap:Reason>\
                 <soap:Detail><MessageTooLargeFault {ns}><Size>9000</Size><MaxSize>4096</MaxSize>\
                 </MessageTooLargeFault></soap:Detail></soap:Fault>"
            ),
        );
        assert_eq!(
            parse_response(too_large.as_bytes())?,
            fault(
                FaultKind::MessageTooLarge,
                None,
                "",
                "size 9000, max size 4096",
                "Sender",
                "too big"
            )
        );

        let request = envelope(
            "soap",
            SOAP12_NS,
            &format!(
                "<SubmitSingleMessageRequest {ns}><Username>u</Username><Password>p</Password>\
                 <FacilityID>f</FacilityID><Hl7Message>MSH|x&#13;</Hl7Message></SubmitSingleMessageRequest>"
            ),
        );
        assert_eq!(
            parse_request(request.as_bytes())?,
            Request::Submit {
                username: Some("u".into()),
                password: Some("p".into()),
                facility_id: Some("f".into()),
                hl7: "MSH|x\r".into(),
            }
        );
        let echo = envelope(
            "",
            SOAP12_NS,
            &format!(
                "<ConnectivityTestRequest {ns}><EchoBack>e</EchoBack></ConnectivityTestRequest>"
            ),
        );
        assert_eq!(parse_request(echo.as_bytes())?, Request::Connectivity { echo: "e".into() });
        Ok(())
    }

    #[test]
    fn fault_without_cdc_detail_is_other() -> Result<()> {
        let body = "<soap:Fault><soap:Code><soap:Value>soap:Receiver</soap:Value>\
            <soap:Subcode><soap:Value>a:DeserializationFailed</soap:Value></soap:Subcode></soap:Code>\
            <soap:Reason><soap:Text xml:lang=\"en\">first</soap:Text><soap:Text xml:lang=\"fr\">premier</soap:Text></soap:Reason>\
            <soap:Detail><ExceptionDetail><Message>Object reference</Message><Type>NullRef</Type>\
            </ExceptionDetail></soap:Detail></soap:Fault>";
        let xml = envelope("soap", SOAP12_NS, body);
        assert_eq!(
            parse_response(xml.as_bytes())?,
            fault(FaultKind::Other, None, "", "Object reference NullRef", "Receiver", "first")
        );
        // No Detail at all.
        let xml = envelope(
            "soap",
            SOAP12_NS,
            "<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code></soap:Fault>",
        );
        assert_eq!(
            parse_response(xml.as_bytes())?,
            fault(FaultKind::Other, None, "", "", "Sender", "")
        );
        Ok(())
    }

    #[test]
    fn unknown_elements_are_skipped_header_ignored() -> Result<()> {
        let body = "<wsa:Junk xmlns:wsa=\"urn:x\"><return>not this</return></wsa:Junk>\
            <connectivityTestResponse xmlns=\"urn:cdc:iisb:2011\"><extra>x</extra>\
            <return>this</return><return>nor this</return></connectivityTestResponse>";
        let xml = format!(
            "<soap:Envelope xmlns:soap=\"{SOAP12_NS}\"><soap:Header><wsse:Security xmlns:wsse=\"urn:s\">\
             <Body><return>header</return></Body></wsse:Security></soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"
        );
        assert_eq!(parse_response(xml.as_bytes())?, Response::Connectivity("this".into()));
        Ok(())
    }

    #[test]
    fn nil_and_missing_fields() -> Result<()> {
        let body = "<submitSingleMessage xmlns=\"urn:cdc:iisb:2011\" \
            xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><username xsi:nil=\"true\"/>\
            <facilityID></facilityID><hl7Message>MSH</hl7Message></submitSingleMessage>";
        let xml = envelope("soap", SOAP12_NS, body);
        assert_eq!(
            parse_request(xml.as_bytes())?,
            Request::Submit {
                username: None,
                password: None,
                facility_id: Some(String::new()),
                hl7: "MSH".into()
            }
        );
        let xml = envelope(
            "soap",
            SOAP12_NS,
            "<submitSingleMessage><username>u</username></submitSingleMessage>",
        );
        assert_eq!(
            parse_request(xml.as_bytes()),
            Err(Error::Missing { parent: "submitSingleMessage".into(), child: "hl7Message" })
        );
        let xml = envelope("soap", SOAP12_NS, "<submitSingleMessageResponse/>");
        assert_eq!(
            parse_response(xml.as_bytes()),
            Err(Error::Missing { parent: "submitSingleMessageResponse".into(), child: "return" })
        );
        let xml = envelope("soap", SOAP12_NS, "<connectivityTest/>");
        assert_eq!(parse_request(xml.as_bytes())?, Request::Connectivity { echo: String::new() });
        let xml = envelope(
            "soap",
            SOAP12_NS,
            "<submitSingleMessages><hl7Message/></submitSingleMessages>",
        );
        assert_eq!(
            parse_request(xml.as_bytes())?,
            Request::Unsupported("submitSingleMessages".into())
        );
        Ok(())
    }

    // --- errors ------------------------------------------------------------------------------

    #[test]
    fn body_with_only_an_unknown_element_is_no_answer() {
        let xml = envelope(
            "soap",
            SOAP12_NS,
            "<getStatusResponse><return>x</return></getStatusResponse>",
        );
        assert_eq!(
            parse_response(xml.as_bytes()),
            Err(Error::NoAnswer { first: Some("getStatusResponse".into()) })
        );
        let xml = envelope("soap", SOAP12_NS, "  ");
        assert_eq!(parse_response(xml.as_bytes()), Err(Error::NoAnswer { first: None }));
        assert_eq!(parse_request(xml.as_bytes()), Err(Error::NoAnswer { first: None }));
    }

    #[test]
    fn html_error_page_is_not_soap() {
        let err = parse_response(b"<html><body>502 Bad Gateway</body></html>");
        let Err(Error::NotSoap { problem, snippet }) = &err else { panic!("{err:?}") };
        assert_eq!(problem, "root element is <html>");
        assert_eq!(snippet, "<html><body>502 Bad Gateway</body></html>");
        // Not even well-formed past the root: still NotSoap, decided at the root.
        let page = b"<!DOCTYPE html>\n<HTML><HEAD><META charset=utf-8><TITLE>503</TITLE></HEAD>";
        assert!(matches!(parse_response(page), Err(Error::NotSoap { .. })));
        // An Envelope without a Body.
        let xml =
            format!("<soap:Envelope xmlns:soap=\"{SOAP12_NS}\"><soap:Header/></soap:Envelope>");
        assert!(matches!(
            parse_response(xml.as_bytes()),
            Err(Error::NotSoap { problem, .. }) if problem == "Envelope has no Body"
        ));
    }

    #[test]
    fn non_xml_empty_and_invalid_utf8() {
        assert!(matches!(parse_response(b"502 Bad Gateway"), Err(Error::NotXml { .. })));
        assert!(matches!(parse_response(b"{\"error\": \"down\"}"), Err(Error::NotXml { .. })));
        assert!(matches!(parse_response(b"<a><b></a>"), Err(Error::NotSoap { .. })));
        assert!(matches!(
            parse_response(b"<Envelope><Body><x></y></Body></Envelope>"),
            Err(Error::NotXml { .. })
        ));
        assert!(matches!(parse_response(b"<?xml version=\"1.0\"?>"), Err(Error::NotXml { .. })));
        assert_eq!(parse_response(b""), Err(Error::Empty));
        assert_eq!(parse_response(b" \r\n\t"), Err(Error::Empty));
        assert_eq!(parse_request(b"\xEF\xBB\xBF"), Err(Error::Empty));

        let mut bytes = NIST_SUBMIT_RESPONSE.as_bytes().to_vec();
        let at = NIST_SUBMIT_RESPONSE.find("IISSUT").unwrap_or(0);
        bytes[at] = 0xFF;
        let err = parse_response(&bytes);
        assert!(
            matches!(&err, Err(Error::NotXml { position, problem, .. })
                if *position == at as u64 && problem == "invalid UTF-8"),
            "{err:?}"
        );
    }

    #[test]
    fn truncated_envelope_is_an_error_never_a_partial_ack() {
        let full = submit_response(ACK);
        for cut in 1..full.len() {
            let Some(prefix) = full.get(..cut) else { continue };
            let got = parse_response(prefix.as_bytes());
            assert!(got.is_err(), "prefix of {cut} bytes gave {got:?}");
        }
    }

    #[test]
    fn a_bom_is_skipped() -> Result<()> {
        let xml = format!("\u{FEFF}{}", connectivity_response("x"));
        assert_eq!(parse_response(xml.as_bytes())?, Response::Connectivity("x".into()));
        Ok(())
    }

    #[test]
    fn deep_wide_and_huge_inputs_are_refused() {
        let deep = format!(
            "<Envelope><Body>{}x{}</Body></Envelope>",
            "<a>".repeat(200_000),
            "</a>".repeat(200_000)
        );
        assert!(matches!(parse_response(deep.as_bytes()), Err(Error::TooDeep { max: 64, .. })));
        let deep_root = "<a>".repeat(500_000);
        assert!(matches!(parse_request(deep_root.as_bytes()), Err(Error::NotSoap { .. })));
        let deep_header = format!("<Envelope><Header>{}", "<h>".repeat(100_000));
        assert!(matches!(parse_request(deep_header.as_bytes()), Err(Error::TooDeep { .. })));

        let wide = format!("<Envelope><Body>{}</Body></Envelope>", "<x/>".repeat(20_000));
        assert_eq!(
            parse_response(wide.as_bytes()),
            Err(Error::TooManyElements { max: MAX_ELEMENTS })
        );

        let huge = vec![b'<'; MAX_BODY + 1];
        assert_eq!(
            parse_response(&huge),
            Err(Error::TooLarge { len: MAX_BODY + 1, max: MAX_BODY })
        );
    }

    #[test]
    fn many_attributes_on_one_element_parse_in_linear_time() -> Result<()> {
        // quick-xml's duplicate-attribute check is quadratic (RUSTSEC-2026-0194): an IIS answer
        // of 4 MiB with one start tag of ~400,000 attributes must not hold a worker for hours.
        let attrs: String = (0..(MAX_BODY - 1024) / 12).map(|i| format!(" a{i:06}=\"\"")).collect();
        let body = format!(
            "<connectivityTestResponse{attrs}><return>ok</return></connectivityTestResponse>"
        );
        let xml = envelope("", SOAP12_NS, &body);
        assert!(xml.len() <= MAX_BODY, "{}", xml.len());
        let started = std::time::Instant::now();
        assert_eq!(parse_response(xml.as_bytes())?, Response::Connectivity("ok".into()));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        Ok(())
    }

    #[test]
    fn pathological_text_parses_in_linear_time() -> Result<()> {
        // Many `&` before one `;`: a scan for `;` from every `&` would be quadratic.
        let amps = "&".repeat(MAX_BODY / 2);
        let body = format!(
            "<connectivityTestResponse><return>{amps};</return></connectivityTestResponse>"
        );
        let xml = envelope("", SOAP12_NS, &body);
        let started = std::time::Instant::now();
        assert_eq!(parse_response(xml.as_bytes())?, Response::Connectivity(format!("{amps};")));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        Ok(())
    }

    #[test]
    fn error_messages_quote_little_of_the_body() {
        let long_name = "x".repeat(10_000);
        let bodies = [
            format!("<{long_name}>"),
            format!("{long_name} <html>"),
            format!("<Envelope><Body><{long_name}/></Body></Envelope>"),
            format!("<Envelope><Body><a></{long_name}></Body></Envelope>"),
            "\u{0}\u{1}\u{7}".repeat(5000),
        ];
        for body in bodies {
            let Err(err) = parse_response(body.as_bytes()) else { panic!("accepted") };
            let message = err.to_string();
            // About 100 characters of fixed text, at most 200 from the body.
            assert!(message.chars().count() <= 300, "{} chars: {message}", message.len());
            assert!(message.matches('x').count() <= 200, "{message}");
        }
    }

    // --- writers -----------------------------------------------------------------------------

    #[test]
    fn content_type_names_the_action() {
        assert_eq!(
            content_type("submitSingleMessage"),
            "application/soap+xml; charset=UTF-8; action=\"urn:cdc:iisb:2011:submitSingleMessage\""
        );
        assert_eq!(
            content_type("connectivityTest"),
            "application/soap+xml; charset=UTF-8; action=\"urn:cdc:iisb:2011:connectivityTest\""
        );
    }

    #[test]
    fn submit_request_wire_format() {
        let xml = submit_request("u<1>", "p'w\"d&", None, "MSH|^~\\&|A\rPID|1|O'Brien\n");
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body>\
             <submitSingleMessage xmlns=\"urn:cdc:iisb:2011\"><username>u&lt;1&gt;</username>\
             <password>p'w\"d&amp;</password>\
             <hl7Message>MSH|^~\\&amp;|A&#13;PID|1|O'Brien&#10;</hl7Message>\
             </submitSingleMessage></soap:Body></soap:Envelope>"
        );
        let with_facility = submit_request("u", "p", Some("F&1"), "M");
        assert!(
            with_facility
                .contains("<password>p</password><facilityID>F&amp;1</facilityID><hl7Message>M<")
        );
    }

    #[test]
    fn submit_request_reserves_enough_for_a_vxu() {
        let xml = submit_request("leonidas", "Spartans300!", Some("EHR1234"), NIST_VXU);
        assert!(
            xml.len() <= submit_capacity("leonidas", "Spartans300!", Some("EHR1234"), NIST_VXU)
        );
        let empty = submit_request("", "", Some(""), "");
        assert!(empty.len() <= submit_capacity("", "", Some(""), ""));
    }

    #[test]
    fn xml_illegal_characters_become_replacement_characters() -> Result<()> {
        let hl7 = "MSH|\u{0}\u{B}\u{C}\u{1C}\r\tX\u{FFFE}\u{FFFF}\u{FFFD}\u{7F}\u{85}";
        let xml = submit_request("u\u{1}", "p", None, hl7);
        assert_xml_chars(&xml);
        assert!(!xml.contains(['\r', '\n']));
        let Request::Submit { hl7: back, username, .. } = parse_request(xml.as_bytes())? else {
            panic!("not a submit")
        };
        assert_eq!(
            back,
            "MSH|\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\r\tX\u{FFFD}\u{FFFD}\u{FFFD}\u{7F}\u{85}"
        );
        assert_eq!(username.as_deref(), Some("u\u{FFFD}"));

        let xml = submit_response("MSA|AA|\u{1B}1\r");
        assert!(xml.contains("<![CDATA["));
        assert_xml_chars(&xml);
        assert_eq!(parse_response(xml.as_bytes())?, Response::Submit("MSA|AA|\u{FFFD}1\r".into()));
        Ok(())
    }

    #[test]
    fn submit_response_falls_back_to_escaping_for_cdata_end() -> Result<()> {
        let ack = "MSA|AA|1\rNTE|||x]]>y&<\r";
        let xml = submit_response(ack);
        assert!(!xml.contains("CDATA"));
        assert!(xml.contains("x]]&gt;y&amp;&lt;&#13;"));
        assert_eq!(parse_response(xml.as_bytes())?, Response::Submit(ack.into()));

        let cdata = submit_response(ACK);
        assert!(cdata.contains(&format!("<return><![CDATA[{ACK}]]></return>")));
        assert!(cdata.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Envelope \
             xmlns=\"http://www.w3.org/2003/05/soap-envelope\"><Header/><Body>\
             <submitSingleMessageResponse xmlns=\"urn:cdc:iisb:2011\">"
        ));
        Ok(())
    }

    #[test]
    fn fault_responses_round_trip() -> Result<()> {
        let cases = [
            (FaultKind::Security, 10, "Sender", "Security"),
            (FaultKind::MessageTooLarge, 1313, "Sender", "MessageTooLarge"),
            (FaultKind::UnsupportedOperation, 8675309, "Sender", "UnsupportedOperation"),
            (FaultKind::Unknown, 54353, "Receiver", "went <wrong> & stayed"),
        ];
        for (kind, code, soap_code, cdc_reason) in cases {
            let xml = fault_response(kind, code, "went <wrong> & stayed", "line 1\r\nline 2");
            assert_xml_chars(&xml);
            assert_eq!(
                parse_response(xml.as_bytes())?,
                fault(
                    kind,
                    Some(code),
                    cdc_reason,
                    "line 1 line 2",
                    soap_code,
                    "went <wrong> & stayed"
                ),
                "{xml}"
            );
        }
        let xml = fault_response(FaultKind::Other, 5, "r", "plain detail");
        assert_eq!(
            parse_response(xml.as_bytes())?,
            fault(FaultKind::Other, None, "", "plain detail", "Receiver", "r")
        );
        Ok(())
    }

    #[test]
    fn connectivity_round_trip() -> Result<()> {
        let echo = "Hello & <world>\r\n ]]> 'ok'";
        assert_eq!(
            parse_request(connectivity_request(echo).as_bytes())?,
            Request::Connectivity { echo: echo.into() }
        );
        assert_eq!(
            parse_response(connectivity_response(echo).as_bytes())?,
            Response::Connectivity(echo.into())
        );
        Ok(())
    }

    #[test]
    fn debug_hides_the_password() {
        let request = Request::Submit {
            username: Some("leonidas".into()),
            password: Some("Spartans300!".into()),
            facility_id: None,
            hl7: "MSH".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("Spartans300!"), "{shown}");
        assert!(shown.contains("password: Some(\"***\")"), "{shown}");
        assert!(shown.contains("leonidas"), "{shown}");
        let shown = format!(
            "{:?}",
            Request::Submit {
                username: None,
                password: None,
                facility_id: None,
                hl7: String::new()
            }
        );
        assert!(shown.contains("password: None"), "{shown}");
    }

    /// Strings rich in what XML and HL7 treat specially, plus arbitrary Unicode.
    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            r#"[&<>"'\]\r\n|^~\\ A-Z0-9\t\u{0}-\u{1F}\u{FFFE}\u{FFFF}é😀]{0,80}"#,
            (r#"[&<>"'\r\n A-Z]{0,20}"#, r#"[&<>"'\r\n A-Z]{0,20}"#)
                .prop_map(|(a, b)| format!("{a}]]>{b}")),
        ]
    }

    proptest! {
        #[test]
        fn submit_request_round_trips(
            username in tricky(),
            password in tricky(),
            facility in proptest::option::of(tricky()),
            hl7 in tricky(),
        ) {
            let xml = submit_request(&username, &password, facility.as_deref(), &hl7);
            assert_xml_chars(&xml);
            prop_assert!(!xml.contains(['\r', '\n']));
            let expected = Request::Submit {
                username: Some(xml_safe(&username)),
                password: Some(xml_safe(&password)),
                facility_id: facility.as_deref().map(xml_safe),
                hl7: xml_safe(&hl7),
            };
            prop_assert_eq!(parse_request(xml.as_bytes()), Ok(expected));
        }

        #[test]
        fn submit_response_round_trips(ack in tricky()) {
            let xml = submit_response(&ack);
            assert_xml_chars(&xml);
            prop_assert_eq!(parse_response(xml.as_bytes()), Ok(Response::Submit(xml_safe(&ack))));
        }

        #[test]
        fn connectivity_round_trips(echo in tricky()) {
            let request = parse_request(connectivity_request(&echo).as_bytes());
            prop_assert_eq!(request, Ok(Request::Connectivity { echo: xml_safe(&echo) }));
            let response = parse_response(connectivity_response(&echo).as_bytes());
            prop_assert_eq!(response, Ok(Response::Connectivity(xml_safe(&echo))));
        }

        #[test]
        fn fault_kind_round_trips(
            kind in prop_oneof![
                Just(FaultKind::Security),
                Just(FaultKind::MessageTooLarge),
                Just(FaultKind::Unknown),
                Just(FaultKind::UnsupportedOperation),
                Just(FaultKind::Other),
            ],
            code in any::<i64>(),
            reason in tricky(),
            detail in tricky(),
        ) {
            let xml = fault_response(kind, code, &reason, &detail);
            assert_xml_chars(&xml);
            let Ok(Response::Fault(got)) = parse_response(xml.as_bytes()) else {
                return Err(TestCaseError::fail(format!("not a fault: {xml}")));
            };
            prop_assert_eq!(got.kind, kind);
            prop_assert_eq!(got.code, (kind != FaultKind::Other).then_some(code));
            prop_assert_eq!(got.detail, fold(&xml_safe(&detail)));
            prop_assert_eq!(got.soap_reason, fold(&xml_safe(&reason)));
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_response(&bytes);
            let _ = parse_request(&bytes);
        }

        #[test]
        fn damaged_envelopes_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
            for xml in [NIST_SUBMIT_REQUEST, NIST_SECURITY_FAULT, NIST_SUBMIT_RESPONSE] {
                let mut bytes = xml.as_bytes().to_vec();
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
                bytes.truncate(bytes.len().saturating_sub(cut));
                let _ = parse_response(&bytes);
                let _ = parse_request(&bytes);
            }
        }
    }
}
