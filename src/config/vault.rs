//! The credential vault: the key, sealing IIS passwords, and reading `Settings.xml`.
//!
//! Role in the data flow: `izrelay credentials import` reads a `Settings.xml`
//! ([`read_settings`]), seals each password with [`Key::seal`] and stores the blob in
//! `iis_endpoint.password_sealed` (`store::credentials`); the forwarder opens it in memory only
//! ([`Key::open`]) when it sends.
//!
//! Invariants:
//! - A sealed password is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, AES-256-GCM with a
//!   fresh random nonce per seal and the provider id as associated data, so a blob copied onto
//!   another provider's row does not open.
//! - A blob that does not open (wrong key, other provider, damaged) is [`Error::WrongKey`],
//!   never garbage.
//! - The key is 32 random bytes: `IZRELAY_KEY` (64 hex digits) wins, else
//!   `<data_dir>/izrelay.key` (raw bytes, 0600; a key file readable by group or others is
//!   refused).
//! - [`Key`] and [`Secret`] print as `***` in `Debug` and have no `Display` or `Serialize`; no
//!   error text, problem line or log line of this module contains a password or any other value
//!   read from a `value` element. Both are overwritten with zeros when dropped (best effort: a
//!   copy made before, such as the file text, is not).
//! - Key rotation with a key file is crash-safe: the new key is written to `izrelay.key.new`
//!   (0600, fsync) before the database is re-sealed in one transaction, and renamed over
//!   `izrelay.key` afterwards. [`Key::load`] finishes an interrupted rotation: when
//!   `izrelay.key.new` exists it keeps whichever key opens the stored credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The key file inside the data directory.
pub const KEY_FILE: &str = "izrelay.key";
/// The new key during `credentials rotate-key`, renamed over [`KEY_FILE`] once the database is
/// re-sealed.
pub const NEW_KEY_FILE: &str = "izrelay.key.new";
/// The environment variable that holds the key (64 hex digits); it wins over the key file.
pub const KEY_ENV: &str = "IZRELAY_KEY";
/// The environment variable with the new key for `rotate-key` when the key comes from
/// [`KEY_ENV`].
pub const NEW_KEY_ENV: &str = "IZRELAY_NEW_KEY";
/// The database file inside the data directory (the same name the CLI opens), read only to
/// finish an interrupted key rotation.
const DB_FILE: &str = "izrelay.db";
/// Key length: AES-256.
const KEY_LEN: usize = 32;
/// GCM tag length.
const TAG_LEN: usize = 16;

/// Vault errors. None of them carries a password or a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `IZRELAY_KEY` nor the key file exists.
    #[error(
        "no credential key: {} does not exist and {KEY_ENV} is not set; run `izrelay init` \
         (or restore the key file from your backup)", .path.display()
    )]
    NoKey {
        /// The key file looked for.
        path: PathBuf,
    },
    /// The key file may be read by other users.
    #[error(
        "{} is readable by group or others (mode {mode:03o}); run `chmod 600 {}`, and \
         rotate the key (`izrelay credentials rotate-key`) if others may have read it",
        .path.display(), .path.display()
    )]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold 32 bytes.
    #[error(
        "{} holds {len} bytes, not a 32-byte key: it is damaged or not an izrelay key; restore \
         it from your backup", .path.display()
    )]
    KeyFileSize {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A key given in the environment is not 64 hex digits.
    #[error("{var} must be 64 hex digits (a 32-byte key, e.g. from `openssl rand -hex 32`)")]
    BadHexKey {
        /// The variable.
        var: &'static str,
    },
    /// A key file could not be read or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done ("read", "write", "rename").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The system random generator failed.
    #[error("the system random generator failed; nothing was sealed")]
    Random,
    /// Sealing failed (ring refused the input).
    #[error("cannot seal the password of provider {provider_id}")]
    Seal {
        /// The provider.
        provider_id: String,
    },
    /// A sealed password does not open: wrong key, another provider's blob, or damaged data.
    #[error(
        "the stored password of provider {provider_id} does not open with this key: the key \
         ({KEY_ENV} or {KEY_FILE}) is not the one the credentials were sealed with, or the data \
         is damaged; use the right key, or remove and re-import the credentials"
    )]
    WrongKey {
        /// The provider whose password did not open.
        provider_id: String,
    },
    /// `rotate-key` with the key in the environment needs the new key there too.
    #[error(
        "the key comes from {KEY_ENV}: set {NEW_KEY_ENV} to a new key (64 hex digits, e.g. \
         `openssl rand -hex 32`) and run rotate-key again"
    )]
    KeyInEnvironment,
    /// The database could not be read to finish an interrupted key rotation.
    #[error(
        "{NEW_KEY_FILE} exists (an interrupted key rotation) but {} cannot be read to tell \
         which key is current: {source}", .path.display()
    )]
    KeyCheck {
        /// The database.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A `Settings.xml` (or the settings given to an import) cannot be used.
    #[error(
        "{} problem(s), nothing imported:\n{}",
        .problems.len(),
        .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    Settings {
        /// Each problem, starting with its line and providerId.
        problems: Vec<String>,
    },
}

/// The vault's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// The 256-bit credential key.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl Key {
    /// Loads the key: `IZRELAY_KEY` (64 hex digits) wins; else `<data_dir>/izrelay.key`
    /// (32 raw bytes), finishing an interrupted `rotate-key` if `izrelay.key.new` exists.
    ///
    /// # Errors
    /// [`Error::NoKey`] when there is no key (run `izrelay init`), [`Error::KeyFileMode`] for a
    /// key file readable by group or others, [`Error::BadHexKey`], [`Error::KeyFileSize`], I/O
    /// errors, and [`Error::WrongKey`] when after an interrupted rotation neither key opens the
    /// stored credentials.
    pub fn load(data_dir: &Path) -> Result<Key> {
        if let Some(key) = Key::from_env(KEY_ENV)? {
            return Ok(key);
        }
        let path = data_dir.join(KEY_FILE);
        let current = read_key_file(&path)?;
        let staged_path = data_dir.join(NEW_KEY_FILE);
        let Some(staged) = read_key_file(&staged_path)? else {
            return current.ok_or(Error::NoKey { path });
        };
        // An interrupted rotation: the database says which key is current.
        let rows = sealed_rows(data_dir)?;
        let opens = |key: &Key| rows.iter().any(|(id, blob)| key.open(id, blob).is_ok());
        match current {
            Some(current) if rows.is_empty() || opens(&current) => {
                tracing::warn!(
                    path = %staged_path.display(),
                    "ignoring the key of a key rotation that did not complete"
                );
                Ok(current)
            }
            _ if rows.is_empty() || opens(&staged) => {
                promote_new_key(data_dir, &staged)?;
                tracing::warn!(path = %path.display(), "finished an interrupted key rotation");
                Ok(staged)
            }
            _ => Err(Error::WrongKey {
                provider_id: rows.first().map(|(id, _)| id.clone()).unwrap_or_default(),
            }),
        }
    }

    /// Like [`Key::load`], but creates `<data_dir>/izrelay.key` (0600, random) when neither
    /// `IZRELAY_KEY` nor the key file exists.
    ///
    /// # Errors
    /// As [`Key::load`], and I/O errors creating the file.
    pub fn load_or_create(data_dir: &Path) -> Result<Key> {
        match Key::load(data_dir) {
            Err(Error::NoKey { path }) => {
                create_private_dir(data_dir)?;
                let key = Key::generate()?;
                match write_key_file(&path, &key) {
                    Ok(()) => Ok(key),
                    // Another process created it meanwhile: use theirs.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Key::load(data_dir)
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    /// A new random key (ring's `SystemRandom`).
    ///
    /// # Errors
    /// [`Error::Random`] when the system generator fails.
    pub fn generate() -> Result<Key> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| Error::Random)?;
        Ok(Key(bytes))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored); `var` names the source in the
    /// error, which never repeats the value.
    ///
    /// # Errors
    /// [`Error::BadHexKey`].
    pub fn from_hex(var: &'static str, text: &str) -> Result<Key> {
        let text = text.trim().as_bytes();
        if text.len() != KEY_LEN * 2 {
            return Err(Error::BadHexKey { var });
        }
        let mut bytes = [0u8; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |b: u8| char::from(b).to_digit(16).ok_or(Error::BadHexKey { var });
            // Both digits are < 16, so the byte cannot overflow.
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?)
                .map_err(|_| Error::BadHexKey { var })?;
        }
        Ok(Key(bytes))
    }

    /// The key in environment variable `var`, or `None` when it is unset or empty.
    ///
    /// # Errors
    /// [`Error::BadHexKey`] when it is set but not 64 hex digits.
    pub fn from_env(var: &'static str) -> Result<Option<Key>> {
        match std::env::var(var) {
            Ok(text) if text.trim().is_empty() => Ok(None),
            Ok(text) => Key::from_hex(var, &text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::BadHexKey { var }),
        }
    }

    fn aead(&self) -> Result<LessSafeKey> {
        // Only fails for a key of the wrong length, which the type rules out.
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| Error::Seal { provider_id: String::new() })
    }

    /// Seals `plaintext` for `provider_id`: `nonce (12) || ciphertext || tag (16)`.
    ///
    /// # Errors
    /// [`Error::Random`] when no nonce can be drawn; [`Error::Seal`].
    pub fn seal(&self, provider_id: &str, plaintext: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| Error::Random)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        let sealed = self.aead()?.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(provider_id.as_bytes()),
            &mut in_out,
        );
        if sealed.is_err() {
            in_out.fill(0);
            return Err(Error::Seal { provider_id: provider_id.to_owned() });
        }
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// Opens a blob made by [`Key::seal`] for the same `provider_id`.
    ///
    /// # Errors
    /// [`Error::WrongKey`] for a wrong key, another provider's blob, or damaged data.
    pub fn open(&self, provider_id: &str, sealed: &[u8]) -> Result<Secret> {
        let wrong = || Error::WrongKey { provider_id: provider_id.to_owned() };
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut in_out = body.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(provider_id.as_bytes()), &mut in_out)
            .map(|p| p.to_vec());
        in_out.fill(0);
        let plain = plain.map_err(|_| wrong())?;
        // Sealed text is always UTF-8; anything else cannot have come from seal.
        String::from_utf8(plain).map(Secret).map_err(|e| {
            e.into_bytes().fill(0);
            wrong()
        })
    }

    /// Whether `self` and `other` are the same key (constant time).
    fn same_as(&self, other: &Key) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A password in memory: `Debug` prints `Secret(***)`; there is no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// One provider's credentials from a `Settings.xml`.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The IIS account number (`providerId` attribute).
    pub provider_id: String,
    /// `userName`.
    pub user_name: String,
    /// `password`.
    pub password: Secret,
    /// `iisEndpoint`, as written (surrounding whitespace removed); `http` or `https`.
    pub endpoint: String,
    /// `facilityId`, if given and not empty.
    pub facility_id: Option<String>,
    /// The line of the `<setting>` element (1-based).
    pub line: usize,
}

/// Reads a `Settings.xml`:
///
/// ```xml
/// <Settings>
///   <setting providerId="PRV-001">
///     <value name="userName">clinic17</value>
///     <value name="password">s3cret</value>
///     <value name="iisEndpoint">https://iis.example.gov/HL7/CDCWS</value>
///     <value name="facilityId">FAC-17</value>
///   </setting>
/// </Settings>
/// ```
///
/// `facilityId` is optional; every other value is required. Whitespace around a value is
/// ignored, except inside CDATA (put a password that starts or ends with a space in
/// `<![CDATA[…]]>`). Unknown elements, attributes and value names are errors, so a typo cannot
/// pass silently. The endpoint must be an `https` URL, or `http` (which the import then accepts
/// only for a loopback host or an explicit opt-in), without user or password in it.
///
/// # Errors
/// [`Error::Settings`] with every problem found, each naming its line and providerId; then
/// nothing in the file is usable.
pub fn read_settings(xml: &str) -> Result<Vec<Setting>> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    Parser::new(xml).run()
}

/// Checks settings given to an import: required values, no duplicate provider, and an
/// endpoint that is https, or http with a loopback host or its provider in `allow_http`.
/// Each problem names the line and the providerId.
pub(crate) fn check_settings(settings: &[Setting], allow_http: &[String]) -> Result<()> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in settings {
        let at = |msg: String| format!("line {}: providerId {}: {msg}", s.line, s.provider_id);
        if s.provider_id.trim().is_empty() {
            problems.push(format!("line {}: <setting> without providerId", s.line));
        }
        if let Some(first) = seen.insert(&s.provider_id, s.line) {
            problems.push(at(format!("providerId given again (first at line {first})")));
        }
        if s.user_name.trim().is_empty() {
            problems.push(at("userName is empty".into()));
        }
        if s.password.expose().is_empty() {
            problems.push(at("password is empty".into()));
        }
        match check_endpoint(&s.endpoint) {
            Err(msg) => problems.push(at(msg)),
            Ok(Scheme::Https) => {}
            Ok(Scheme::Http { loopback: true }) => {}
            Ok(Scheme::Http { loopback: false }) => {
                if !allow_http.iter().any(|p| p == &s.provider_id) {
                    problems.push(at(format!(
                        "iisEndpoint uses plain http to {}: credentials would cross the network \
                         in clear; use https, or pass --allow-http {} if this endpoint really \
                         has no TLS",
                        host_of(&s.endpoint),
                        s.provider_id
                    )));
                }
            }
        }
    }
    for p in allow_http {
        if !settings.iter().any(|s| &s.provider_id == p) {
            problems.push(format!("--allow-http {p}: no setting has this providerId"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(Error::Settings { problems }) }
}

/// Whether `endpoint` is plain http (then the import stores `allow_insecure`).
pub(crate) fn is_plain_http(endpoint: &str) -> bool {
    matches!(check_endpoint(endpoint), Ok(Scheme::Http { .. }))
}

/// An accepted endpoint scheme.
enum Scheme {
    Https,
    Http { loopback: bool },
}

/// Parses an endpoint URL. The error text never repeats the URL (it could hold a secret).
fn check_endpoint(endpoint: &str) -> std::result::Result<Scheme, String> {
    let url = reqwest::Url::parse(endpoint.trim())
        .map_err(|e| format!("iisEndpoint is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("iisEndpoint must not contain a user name or password; put them in the \
                    userName and password values"
            .into());
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err("iisEndpoint has no host".into());
    }
    match url.scheme() {
        "https" => Ok(Scheme::Https),
        "http" => Ok(Scheme::Http { loopback: is_loopback(host) }),
        other => Err(format!("iisEndpoint must be an https URL, not {other}:")),
    }
}

/// `127.0.0.0/8`, `::1` or `localhost`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost."),
    }
}

/// `scheme://host[:port]` of an endpoint, for messages.
fn host_of(endpoint: &str) -> String {
    reqwest::Url::parse(endpoint.trim())
        .map(|u| {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        })
        .unwrap_or_default()
}

/// The element kinds a `Settings.xml` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    Setting,
    Value,
    /// Anything else (already reported); its content is skipped.
    Other,
}

/// The value names (fields) of a `<setting>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    UserName,
    Password,
    Endpoint,
    FacilityId,
}

impl Field {
    fn parse(s: &str) -> Option<Field> {
        match s {
            "userName" => Some(Field::UserName),
            "password" => Some(Field::Password),
            "iisEndpoint" => Some(Field::Endpoint),
            "facilityId" => Some(Field::FacilityId),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Field::UserName => "userName",
            Field::Password => "password",
            Field::Endpoint => "iisEndpoint",
            Field::FacilityId => "facilityId",
        }
    }
}

/// A `<setting>` being read.
struct Draft {
    provider_id: Option<String>,
    line: usize,
    ok: bool,
    values: BTreeMap<Field, (Secret, usize)>,
}

/// `line N: providerId P`, the start of every problem (or just `line N` outside a setting).
fn prefix(draft: Option<&Draft>, line: usize) -> String {
    match draft {
        Some(Draft { provider_id: Some(p), .. }) => format!("line {line}: providerId {p}"),
        Some(d) if d.line == line => format!("line {line}: <setting> without providerId"),
        Some(d) => format!("line {line}: <setting> of line {} without providerId", d.line),
        None => format!("line {line}"),
    }
}

/// A `<value>` being read: its name (None when missing or unknown, already reported), its
/// line, and its text pieces (`true` for CDATA).
struct ValueDraft {
    name: Option<Field>,
    line: usize,
    pieces: Vec<(bool, String)>,
}

impl ValueDraft {
    /// The text: whitespace around it is dropped, except where CDATA starts or ends it.
    fn text(mut self) -> Secret {
        if let Some((false, first)) = self.pieces.first_mut() {
            *first = first.trim_start().to_owned();
        }
        if let Some((false, last)) = self.pieces.last_mut() {
            *last = last.trim_end().to_owned();
        }
        Secret(self.pieces.iter().map(|(_, s)| s.as_str()).collect())
    }
}

struct Parser<'a> {
    xml: &'a str,
    reader: quick_xml::Reader<&'a [u8]>,
    /// Byte offsets where each line after the first starts.
    line_starts: Vec<usize>,
    /// Each problem with its line, for sorting.
    problems: Vec<(usize, String)>,
    stack: Vec<(Kind, usize)>,
    seen_root: bool,
    setting: Option<Draft>,
    value: Option<ValueDraft>,
    providers: BTreeMap<String, usize>,
    settings: Vec<Setting>,
}

impl<'a> Parser<'a> {
    fn new(xml: &'a str) -> Self {
        let line_starts =
            xml.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1).collect();
        Parser {
            xml,
            reader: quick_xml::Reader::from_reader(xml.as_bytes()),
            line_starts,
            problems: Vec::new(),
            stack: Vec::new(),
            seen_root: false,
            setting: None,
            value: None,
            providers: BTreeMap::new(),
            settings: Vec::new(),
        }
    }

    /// The 1-based line of byte offset `pos`.
    fn line_at(&self, pos: u64) -> usize {
        let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(self.xml.len());
        self.line_starts.partition_point(|&start| start <= pos) + 1
    }

    /// Records a problem inside the current setting (or at `line` outside one).
    fn problem(&mut self, line: usize, msg: &str) {
        self.problems.push((line, format!("{}: {msg}", prefix(self.setting.as_ref(), line))));
        if let Some(draft) = &mut self.setting {
            draft.ok = false;
        }
    }

    fn run(mut self) -> Result<Vec<Setting>> {
        loop {
            let at = self.reader.buffer_position();
            let line = self.line_at(at);
            match self.reader.read_event() {
                Ok(Event::Start(e)) => self.start(&e, line, false),
                Ok(Event::Empty(e)) => self.start(&e, line, true),
                Ok(Event::End(_)) => self.end(),
                Ok(Event::Text(t)) => {
                    if self.value.is_some() {
                        match t.unescape() {
                            Ok(text) => self.piece(false, text.into_owned()),
                            Err(_) => self.problem(
                                line,
                                &format!(
                                    "value {}: an invalid entity or character reference \
                                     (write & as &amp; and < as &lt;, or use CDATA)",
                                    self.value_name()
                                ),
                            ),
                        }
                    } else if !t.iter().all(u8::is_ascii_whitespace) && !self.in_other() {
                        self.problem(line, "text outside a <value> element");
                    }
                }
                Ok(Event::CData(c)) => {
                    if self.value.is_some() {
                        match std::str::from_utf8(&c) {
                            Ok(text) => self.piece(true, text.to_owned()),
                            Err(_) => self.problem(line, "CDATA that is not UTF-8"),
                        }
                    } else if !self.in_other() {
                        self.problem(line, "CDATA outside a <value> element");
                    }
                }
                Ok(Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_)) => {}
                Ok(Event::Eof) => {
                    if let Some(&(kind, open)) = self.stack.last() {
                        let line = self.line_at(self.xml.len() as u64);
                        let what = match kind {
                            Kind::Root => "<Settings>",
                            Kind::Setting => "<setting>",
                            Kind::Value => "<value>",
                            Kind::Other => "an element",
                        };
                        self.problem(
                            line,
                            &format!(
                                "malformed XML: the file ends inside {what} opened at line {open}"
                            ),
                        );
                    } else if !self.seen_root {
                        self.problems.push((1, "line 1: no <Settings> element".into()));
                    } else if self.settings.is_empty() && self.problems.is_empty() {
                        self.problems
                            .push((usize::MAX, "the file has no <setting> element".into()));
                    }
                    break;
                }
                Err(e) => {
                    let line = self.line_at(self.reader.error_position());
                    let msg = format!("malformed XML: {}", describe_xml_error(&e));
                    self.problem(line, &msg);
                    break;
                }
            }
        }
        if self.problems.is_empty() {
            Ok(self.settings)
        } else {
            // In file order; problems found on one line keep the order they were found in.
            self.problems.sort_by_key(|(line, _)| *line);
            Err(Error::Settings { problems: self.problems.into_iter().map(|(_, p)| p).collect() })
        }
    }

    /// Inside an unexpected element, already reported: its content is not.
    fn in_other(&self) -> bool {
        self.stack.last().is_some_and(|&(kind, _)| kind == Kind::Other)
    }

    fn value_name(&self) -> &'static str {
        self.value.as_ref().and_then(|v| v.name).map_or("(unnamed)", Field::as_str)
    }

    fn piece(&mut self, cdata: bool, text: String) {
        if let Some(v) = &mut self.value {
            v.pieces.push((cdata, text));
        }
    }

    fn start(&mut self, e: &BytesStart<'_>, line: usize, empty: bool) {
        let name = e.name();
        let name = name.as_ref();
        let parent = self.stack.last().map(|&(k, _)| k);
        let kind = match parent {
            None => {
                if self.seen_root {
                    self.problem(line, "a second top-level element after </Settings>");
                    Kind::Other
                } else {
                    self.seen_root = true;
                    if name != b"Settings" {
                        self.problem(
                            line,
                            &format!(
                                "the top element must be <Settings>, not <{}>",
                                String::from_utf8_lossy(name)
                            ),
                        );
                    }
                    Kind::Root
                }
            }
            Some(Kind::Root) if name == b"setting" => {
                self.open_setting(e, line);
                Kind::Setting
            }
            Some(Kind::Root) => {
                self.problem(
                    line,
                    &format!(
                        "unexpected <{}> in <Settings> (expected <setting>)",
                        String::from_utf8_lossy(name)
                    ),
                );
                Kind::Other
            }
            Some(Kind::Setting) if name == b"value" => {
                self.open_value(e, line);
                Kind::Value
            }
            Some(Kind::Setting) => {
                self.problem(
                    line,
                    &format!(
                        "unexpected <{}> in <setting> (expected <value name=\"…\">)",
                        String::from_utf8_lossy(name)
                    ),
                );
                Kind::Other
            }
            Some(Kind::Value) => {
                // The "element" may be part of a password that contains '<': never echo it.
                let msg = format!(
                    "value {}: contains markup; write < as &lt; and & as &amp;, or use CDATA",
                    self.value_name()
                );
                self.problem(line, &msg);
                if let Some(v) = &mut self.value {
                    v.name = None;
                }
                Kind::Other
            }
            Some(Kind::Other) => Kind::Other,
        };
        self.stack.push((kind, line));
        if empty {
            self.end();
        }
    }

    fn open_setting(&mut self, e: &BytesStart<'_>, line: usize) {
        let mut provider_id = None;
        let mut problems = Vec::new();
        for attr in e.attributes() {
            match attr {
                Ok(a) if a.key.as_ref() == b"providerId" => match a.unescape_value() {
                    Ok(v) if !v.trim().is_empty() && !v.chars().any(char::is_control) => {
                        provider_id = Some(v.trim().to_owned());
                    }
                    Ok(v) if v.trim().is_empty() => {}
                    _ => problems.push("providerId has an invalid character".to_owned()),
                },
                Ok(a) => problems.push(format!(
                    "unknown attribute {} on <setting> (only providerId)",
                    String::from_utf8_lossy(a.key.as_ref())
                )),
                Err(_) => problems.push("malformed attribute".to_owned()),
            }
        }
        if provider_id.is_none() {
            self.problems.push((line, format!("line {line}: <setting> without providerId")));
        }
        let ok = provider_id.is_some();
        self.setting = Some(Draft { provider_id, line, ok, values: BTreeMap::new() });
        for p in problems {
            self.problem(line, &p);
        }
    }

    fn open_value(&mut self, e: &BytesStart<'_>, line: usize) {
        let mut name = None;
        let mut named = false;
        let mut problems = Vec::new();
        for attr in e.attributes() {
            match attr {
                Ok(a) if a.key.as_ref() == b"name" => {
                    named = true;
                    match a.unescape_value() {
                        Ok(v) => match Field::parse(v.trim()) {
                            Some(n) => name = Some(n),
                            None => problems.push(format!(
                                "unknown value name {:?} (expected userName, password, \
                                 iisEndpoint or facilityId)",
                                v.trim()
                            )),
                        },
                        Err(_) => problems.push("value name has an invalid character".into()),
                    }
                }
                Ok(a) => problems.push(format!(
                    "unknown attribute {} on <value> (only name)",
                    String::from_utf8_lossy(a.key.as_ref())
                )),
                Err(_) => problems.push("malformed attribute on <value>".into()),
            }
        }
        if !named {
            problems.push("<value> without a name attribute".into());
        }
        for p in problems {
            self.problem(line, &p);
        }
        self.value = Some(ValueDraft { name, line, pieces: Vec::new() });
    }

    fn end(&mut self) {
        let Some((kind, _)) = self.stack.pop() else { return };
        match kind {
            Kind::Value => {
                let Some(v) = self.value.take() else { return };
                let Some(name) = v.name else { return };
                let value_line = v.line;
                let text = v.text();
                let first = self.setting.as_ref().and_then(|d| d.values.get(&name)).map(|x| x.1);
                if let Some(first) = first {
                    self.problem(
                        value_line,
                        &format!("value {} given twice (first at line {first})", name.as_str()),
                    );
                } else if let Some(d) = &mut self.setting {
                    d.values.insert(name, (text, value_line));
                }
            }
            Kind::Setting => {
                if let Some(draft) = self.setting.take() {
                    self.finish_setting(draft);
                }
            }
            Kind::Root | Kind::Other => {}
        }
    }

    fn finish_setting(&mut self, mut draft: Draft) {
        let mut problems = Vec::new();
        let mut take = |name: Field, required: bool| -> Option<Secret> {
            match draft.values.remove(&name) {
                Some((text, line)) if text.expose().trim().is_empty() => {
                    if required {
                        problems.push((line, format!("value {} is empty", name.as_str())));
                    }
                    None
                }
                Some((text, _)) => Some(text),
                None => {
                    if required {
                        problems.push((draft.line, format!("value {} is missing", name.as_str())));
                    }
                    None
                }
            }
        };
        let user_name = take(Field::UserName, true);
        let password = take(Field::Password, true);
        let endpoint = take(Field::Endpoint, true);
        let facility_id = take(Field::FacilityId, false);
        if let Some(e) = &endpoint {
            if let Err(msg) = check_endpoint(e.expose()) {
                let line = draft.line;
                problems.push((line, msg));
            }
        }
        if let Some(p) = &draft.provider_id {
            if let Some(first) = self.providers.get(p) {
                problems
                    .push((draft.line, format!("providerId given again (first at line {first})")));
            } else {
                self.providers.insert(p.clone(), draft.line);
            }
        }
        let ok = draft.ok && problems.is_empty();
        for (line, msg) in problems {
            self.problems.push((line, format!("{}: {msg}", prefix(Some(&draft), line))));
        }
        if let (true, Some(provider_id), Some(user), Some(password), Some(endpoint)) =
            (ok, draft.provider_id.take(), user_name, password, endpoint)
        {
            self.settings.push(Setting {
                provider_id,
                user_name: user.expose().to_owned(),
                password,
                endpoint: endpoint.expose().trim().to_owned(),
                facility_id: facility_id.map(|f| f.expose().to_owned()),
                line: draft.line,
            });
        }
    }
}

/// A quick-xml error as text that never repeats file content (a stray `<` in a password turns
/// the rest of it into a "tag name"): only the names of the known elements are kept.
fn describe_xml_error(e: &quick_xml::Error) -> String {
    use quick_xml::errors::IllFormedError;
    let known = |n: &str| matches!(n, "Settings" | "setting" | "value");
    match e {
        quick_xml::Error::Syntax(s) => s.to_string(),
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found })
            if known(expected) && known(found) =>
        {
            format!("</{found}> does not close the open <{expected}>")
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) if known(name) => {
            format!("</{name}> closes nothing")
        }
        quick_xml::Error::IllFormed(
            IllFormedError::MismatchedEndTag { .. } | IllFormedError::UnmatchedEndTag(_),
        ) => "a closing tag does not match the open element (a < in a value must be written \
              &lt;, or the value put in CDATA)"
            .into(),
        quick_xml::Error::IllFormed(IllFormedError::MissingEndTag(_)) => {
            "an element is not closed".into()
        }
        quick_xml::Error::IllFormed(IllFormedError::MissingDeclVersion(_)) => {
            "the <?xml ?> declaration has no version".into()
        }
        quick_xml::Error::IllFormed(_) => "ill-formed markup".into(),
        quick_xml::Error::InvalidAttr(_) => "a malformed attribute".into(),
        quick_xml::Error::Encoding(_) => "text that is not valid UTF-8".into(),
        quick_xml::Error::Escape(_) => "an invalid entity or character reference".into(),
        quick_xml::Error::Io(_) | quick_xml::Error::Namespace(_) => "unreadable markup".into(),
    }
}

/// Reads a key file: `None` when it does not exist.
fn read_key_file(path: &Path) -> Result<Option<Key>> {
    let io = |source| Error::Io { action: "read", path: path.to_path_buf(), source };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFileMode { path: path.to_path_buf(), mode });
        }
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(Error::KeyFileSize { path: path.to_path_buf(), len: meta.len() });
    }
    let mut bytes = [0u8; KEY_LEN];
    std::io::Read::read_exact(&mut file, &mut bytes).map_err(io)?;
    Ok(Some(Key(bytes)))
}

/// Creates `path` 0600 holding `key`, fsynced with its directory; fails if it exists.
fn write_key_file(path: &Path, key: &Key) -> Result<()> {
    let io = |source| Error::Io { action: "write", path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(&key.0).and_then(|()| file.sync_all()).map_err(io)?;
    sync_dir(path)
}

/// Makes a rename or creation in `path`'s directory durable (unix; a no-op elsewhere).
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| Error::Io {
            action: "sync",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates the data directory (0700 on unix) if it is missing.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `key` to `<data_dir>/izrelay.key.new` (0600, fsync), replacing a leftover one:
/// step 1 of a key rotation, before the database is re-sealed. The caller holds the database
/// write lock, so no other rotation is staging at the same time.
pub(crate) fn stage_new_key(data_dir: &Path, key: &Key) -> Result<()> {
    let path = data_dir.join(NEW_KEY_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { action: "remove", path, source }),
    }
    write_key_file(&path, key)
}

/// Renames `<data_dir>/izrelay.key.new` over `izrelay.key` and fsyncs the directory: the last
/// step of a key rotation, after the database is re-sealed with `key`. Another process that
/// finished the rename first (see [`Key::load`]) is fine.
pub(crate) fn promote_new_key(data_dir: &Path, key: &Key) -> Result<()> {
    let from = data_dir.join(NEW_KEY_FILE);
    let to = data_dir.join(KEY_FILE);
    match std::fs::rename(&from, &to) {
        Ok(()) => sync_dir(&to),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match read_key_file(&to)? {
            Some(current) if current.same_as(key) => Ok(()),
            _ => Err(Error::Io { action: "rename", path: from, source: e }),
        },
        Err(source) => Err(Error::Io { action: "rename", path: from, source }),
    }
}

/// Removes a staged key that was never used (its rotation failed before any write).
pub(crate) fn discard_new_key(data_dir: &Path) {
    if let Err(e) = std::fs::remove_file(data_dir.join(NEW_KEY_FILE)) {
        tracing::warn!(error = %e, "cannot remove the unused {NEW_KEY_FILE}");
    }
}

/// Every `(provider_id, password_sealed)` in the data directory's database (none when there is
/// no database yet).
fn sealed_rows(data_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let err = |source| Error::KeyCheck { path: path.clone(), source };
    // Read-write without CREATE: WAL needs the -shm file, and a missing file is not created.
    let conn = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
    let mut stmt =
        conn.prepare("SELECT provider_id, password_sealed FROM iis_endpoint").map_err(err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- exported from the clinic's old relay -->
<Settings>
  <setting providerId="PRV-001">
    <value name="userName">clinic17</value>
    <value name="password">s3cret&amp;more</value>
    <value name="iisEndpoint">https://iis.example.gov/HL7/CDCWS</value>
    <value name="facilityId">FAC-17</value>
  </setting>
  <setting providerId="PRV-002">
    <value name="userName"> clinic18 </value>
    <value name="password"><![CDATA[ <p&ss> ]]></value>
    <value name="iisEndpoint">http://127.0.0.1:8443/iis</value>
    <value name="facilityId"/>
  </setting>
</Settings>
"#;

    fn problems(xml: &str) -> Vec<String> {
        match read_settings(xml) {
            Err(Error::Settings { problems }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn seal_then_open_round_trips_with_a_fresh_nonce() -> Result<()> {
        let key = Key::generate()?;
        let a = key.seal("PRV-001", "s3cret")?;
        let b = key.seal("PRV-001", "s3cret")?;
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_eq!(a.len(), NONCE_LEN + "s3cret".len() + TAG_LEN);
        assert!(!a.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(key.open("PRV-001", &a)?.expose(), "s3cret");
        assert_eq!(key.open("PRV-001", &b)?.expose(), "s3cret");
        assert_eq!(key.open("PRV-001", &key.seal("PRV-001", "")?)?.expose(), "");
        Ok(())
    }

    #[test]
    fn a_wrong_key_or_another_provider_is_wrong_key() -> Result<()> {
        let key = Key::generate()?;
        let sealed = key.seal("PRV-001", "s3cret")?;
        let other = Key::generate()?;
        assert!(matches!(
            other.open("PRV-001", &sealed),
            Err(Error::WrongKey { provider_id }) if provider_id == "PRV-001"
        ));
        assert!(matches!(
            key.open("PRV-002", &sealed),
            Err(Error::WrongKey { provider_id }) if provider_id == "PRV-002"
        ));
        let text = other.open("PRV-001", &sealed).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("PRV-001") && text.contains("re-import"), "{text}");
        assert!(!text.contains("s3cret"));
        Ok(())
    }

    #[test]
    fn truncated_or_garbage_blobs_are_errors_not_panics() -> Result<()> {
        let key = Key::generate()?;
        let sealed = key.seal("P", "s3cret")?;
        for len in 0..sealed.len() {
            assert!(matches!(key.open("P", &sealed[..len]), Err(Error::WrongKey { .. })), "{len}");
        }
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(key.open("P", &flipped), Err(Error::WrongKey { .. })));
        assert!(matches!(key.open("P", &[0xff; 200]), Err(Error::WrongKey { .. })));
        Ok(())
    }

    #[test]
    fn debug_redacts_keys_and_secrets() -> Result<()> {
        let key = Key::from_hex("T", &"ab".repeat(32))?;
        assert_eq!(format!("{key:?}"), "Key(***)");
        let secret = Secret::new("s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let settings = read_settings(GOOD)?;
        let debug = format!("{settings:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("p&ss"), "{debug}");
        Ok(())
    }

    #[test]
    fn hex_keys_are_checked_without_echoing_them() {
        assert!(Key::from_hex("T", &format!("  {}\n", "0F".repeat(32))).is_ok());
        for bad in ["", "abc", &"zz".repeat(32), &"a".repeat(63), &"é".repeat(32)] {
            let e = Key::from_hex(KEY_ENV, bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("IZRELAY_KEY must be 64 hex digits"), "{e}");
        }
        let e = Key::from_hex(KEY_ENV, &"zz".repeat(32)).err().map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("zz"));
    }

    #[test]
    fn good_settings_are_read_with_escapes_cdata_and_lines() -> Result<()> {
        let s = read_settings(GOOD)?;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].provider_id, "PRV-001");
        assert_eq!(s[0].user_name, "clinic17");
        assert_eq!(s[0].password.expose(), "s3cret&more");
        assert_eq!(s[0].endpoint, "https://iis.example.gov/HL7/CDCWS");
        assert_eq!(s[0].facility_id.as_deref(), Some("FAC-17"));
        assert_eq!(s[0].line, 4);
        assert_eq!(s[1].user_name, "clinic18");
        assert_eq!(s[1].password.expose(), " <p&ss> ", "CDATA keeps its spaces");
        assert_eq!(s[1].facility_id, None);
        assert_eq!(s[1].line, 10);
        // A byte-order mark and CRLF line ends change nothing.
        let crlf = format!("\u{feff}{}", GOOD.replace('\n', "\r\n"));
        let s = read_settings(&crlf)?;
        assert_eq!((s[1].line, s[1].password.expose()), (10, " <p&ss> "));
        Ok(())
    }

    #[test]
    fn malformed_xml_names_its_line() {
        let xml = "<Settings>\n  <setting providerId=\"PRV-1\">\n    <value name=\"userName\">u</value>\n  </setting\n</Settings>\n";
        let p = problems(xml);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("line 4: providerId PRV-1: malformed XML"), "{p:?}");

        let p = problems("<Settings>\n<setting providerId=\"A\">\n</Settings>\n");
        assert!(p[0].starts_with("line 3: providerId A: malformed XML: </Settings>"), "{p:?}");

        let p = problems("<Settings>\n<setting providerId=\"A\">\n");
        assert!(p[0].contains("malformed XML: the file ends inside <setting> opened at line 2"));
        assert!(p[0].contains("providerId A"), "{p:?}");

        assert_eq!(problems(""), vec!["line 1: no <Settings> element".to_owned()]);
        assert_eq!(problems("<Settings/>"), vec!["the file has no <setting> element".to_owned()]);
    }

    #[test]
    fn a_stray_angle_bracket_in_a_password_is_not_echoed() {
        let xml = "<Settings>\n <setting providerId=\"A\">\n  <value name=\"password\">ab<cdSECRET</value>\n </setting>\n</Settings>";
        let p = problems(xml);
        let all = p.join("\n");
        assert!(all.contains("providerId A"), "{all}");
        assert!(!all.contains("SECRET") && !all.contains("cd"), "{all}");
        let amp = "<Settings>\n <setting providerId=\"A\">\n  <value name=\"password\">a&SECRET;b</value>\n </setting>\n</Settings>";
        let all = problems(amp).join("\n");
        assert!(all.contains("line 3: providerId A: value password: an invalid entity"), "{all}");
        assert!(!all.contains("SECRET"), "{all}");
    }

    #[test]
    fn missing_or_empty_values_are_reported_per_setting() {
        let xml = r#"<Settings>
  <setting providerId="A">
    <value name="userName">u</value>
    <value name="iisEndpoint">https://a.example/</value>
  </setting>
  <setting providerId="B">
    <value name="userName">u</value>
    <value name="password">   </value>
    <value name="iisEndpoint"></value>
  </setting>
  <setting>
    <value name="userName">u</value>
  </setting>
</Settings>"#;
        let p = problems(xml);
        assert!(p.contains(&"line 2: providerId A: value password is missing".to_owned()), "{p:?}");
        assert!(p.contains(&"line 8: providerId B: value password is empty".to_owned()), "{p:?}");
        assert!(
            p.contains(&"line 9: providerId B: value iisEndpoint is empty".to_owned()),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.starts_with("line 11: <setting> without providerId")), "{p:?}");
        assert!(p.iter().all(|x| x.starts_with("line ")), "{p:?}");
    }

    #[test]
    fn a_duplicate_provider_names_both_lines() {
        let xml = r#"<Settings>
  <setting providerId="PRV-001">
    <value name="userName">u</value>
    <value name="password">p1</value>
    <value name="iisEndpoint">https://a.example/</value>
  </setting>
  <setting providerId="PRV-001">
    <value name="userName">u</value>
    <value name="password">p2</value>
    <value name="iisEndpoint">https://a.example/</value>
  </setting>
</Settings>"#;
        assert_eq!(
            problems(xml),
            vec!["line 7: providerId PRV-001: providerId given again (first at line 2)".to_owned()]
        );
    }

    #[test]
    fn unknown_names_are_errors_and_values_are_never_echoed() {
        let xml = r#"<Settings>
  <setting providerId="A" region="x">
    <value name="userName">u</value>
    <value name="pasword">TOPSECRET</value>
    <value name="password">TOPSECRET</value>
    <value name="password">TOPSECRET2</value>
    <value name="iisEndpoint">https://a.example/</value>
    <vaule name="facilityId">F</vaule>
  </setting>
  <extra/>
</Settings>"#;
        let p = problems(xml);
        let all = p.join("\n");
        assert!(all.contains("line 2: providerId A: unknown attribute region"), "{all}");
        assert!(all.contains("line 4: providerId A: unknown value name \"pasword\""), "{all}");
        assert!(all.contains("line 6: providerId A: value password given twice (first at line 5)"));
        assert!(all.contains("line 8: providerId A: unexpected <vaule>"), "{all}");
        assert!(all.contains("line 10: unexpected <extra>"), "{all}");
        assert!(!all.contains("TOPSECRET"), "{all}");
        assert_eq!(p.len(), 5, "nothing else, e.g. about the text inside <vaule>: {all}");
    }

    #[test]
    fn endpoints_must_be_https_urls_without_credentials() -> Result<()> {
        let one = |url: &str| {
            format!(
                "<Settings>\n<setting providerId=\"A\"><value name=\"userName\">u</value>\
                 <value name=\"password\">pw</value><value name=\"iisEndpoint\">{url}</value>\
                 </setting></Settings>"
            )
        };
        for (url, want) in [
            ("ftp://iis.example.gov/x", "must be an https URL, not ftp:"),
            ("iis.example.gov/x", "is not a URL"),
            ("https://user:SECRETPW@iis.example.gov/", "must not contain a user name or password"),
        ] {
            let all = problems(&one(url)).join("\n");
            assert!(all.contains(&format!("line 2: providerId A: iisEndpoint {want}")), "{all}");
            assert!(!all.contains("SECRETPW"), "{all}");
        }
        // Plain http is kept for the import to judge (loopback or --allow-http).
        let s = read_settings(&one("http://iis.example.gov/x"))?;
        let e = check_settings(&s, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(
            "line 2: providerId A: iisEndpoint uses plain http to http://iis.example.gov"
        ));
        assert!(e.contains("--allow-http A"), "{e}");
        check_settings(&s, &["A".to_owned()])?;
        for local in
            ["http://127.0.0.1:9/x", "http://127.8.9.1/", "http://[::1]:80/", "http://localhost/"]
        {
            check_settings(&read_settings(&one(local))?, &[])?;
        }
        let e = check_settings(&read_settings(&one("http://127.0.0.1/"))?, &["B".to_owned()]);
        let e = e.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--allow-http B: no setting has this providerId"), "{e}");
        Ok(())
    }

    #[test]
    fn key_files_load_create_and_refuse_loose_modes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            action: "create",
            path: "tmp".into(),
            source: e,
        })?;
        let data = dir.path().join("data");
        // The tests never set IZRELAY_KEY (cargo test runs them in one process).
        assert!(std::env::var_os(KEY_ENV).is_none(), "unset IZRELAY_KEY to run the tests");
        assert!(matches!(Key::load(&data), Err(Error::NoKey { .. })));
        let created = Key::load_or_create(&data)?;
        let loaded = Key::load(&data)?;
        assert!(created.same_as(&loaded));
        let sealed = created.seal("P", "pw")?;
        assert_eq!(loaded.open("P", &sealed)?.expose(), "pw");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(KEY_FILE);
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| Error::Io { action: "chmod", path: path.clone(), source: e })?;
            let e = Key::load(&data).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("readable by group or others (mode 644)"), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn load_finishes_or_ignores_an_interrupted_rotation() -> std::result::Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path();
        let old = Key::load_or_create(data).map_err(|e| e.to_string())?;
        let mut store =
            crate::store::Store::open(&data.join(DB_FILE)).map_err(|e| e.to_string())?;
        let settings = read_settings(
            "<Settings><setting providerId=\"A\"><value name=\"userName\">u</value>\
             <value name=\"password\">pw</value>\
             <value name=\"iisEndpoint\">https://a.example/</value></setting></Settings>",
        )
        .map_err(|e| e.to_string())?;
        store.import_credentials(&settings, &old, &[]).map_err(|e| e.to_string())?;
        let staged = data.join(NEW_KEY_FILE);

        // Crash before the commit: the staged key is ignored (and left for the next rotation).
        let unused = Key::generate().map_err(|e| e.to_string())?;
        stage_new_key(data, &unused).map_err(|e| e.to_string())?;
        assert!(Key::load(data).map_err(|e| e.to_string())?.same_as(&old));
        assert!(staged.exists());

        // Crash after the commit, before the rename: load finishes the rename.
        let new = Key::generate().map_err(|e| e.to_string())?;
        stage_new_key(data, &new).map_err(|e| e.to_string())?;
        store.rotate_key(&old, &new).map_err(|e| e.to_string())?;
        assert!(Key::load(data).map_err(|e| e.to_string())?.same_as(&new));
        assert!(!staged.exists());
        let on_disk = read_key_file(&data.join(KEY_FILE)).map_err(|e| e.to_string())?;
        assert!(on_disk.is_some_and(|k| k.same_as(&new)));
        // The rotating process renaming afterwards finds the work done.
        promote_new_key(data, &new).map_err(|e| e.to_string())?;
        assert!(promote_new_key(data, &old).is_err());

        // Neither key opens the credentials: a clear error, no guess.
        stage_new_key(data, &old).map_err(|e| e.to_string())?;
        store
            .rotate_key(&new, &Key::generate().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        assert!(
            matches!(Key::load(data), Err(Error::WrongKey { provider_id }) if provider_id == "A")
        );
        Ok(())
    }

    #[test]
    fn every_truncation_is_an_error_that_does_not_echo_the_password() {
        for (i, _) in GOOD.char_indices().filter(|&(i, _)| i < GOOD.trim_end().len()) {
            let e = read_settings(&GOOD[..i]).err().map(|e| e.to_string());
            let e = e.unwrap_or_else(|| panic!("a prefix of {i} bytes was accepted"));
            assert!(!e.contains("s3cr") && !e.contains("p&s"), "{i}: {e}");
            assert!(e.contains("line "), "{i}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_or_mangled_text_never_panics(
            text in "\\PC{0,200}",
            at in 0usize..600,
            junk in "[<>&;\"'/=!?\\[\\]a-zA-Z -]{0,8}",
        ) {
            let _ = read_settings(&text);
            let at = (0..=at.min(GOOD.len())).rev().find(|&i| GOOD.is_char_boundary(i)).unwrap_or(0);
            let mangled = format!("{}{junk}{}", &GOOD[..at], &GOOD[at..]);
            if let Err(e) = read_settings(&mangled) {
                let e = e.to_string();
                proptest::prop_assert!(!e.contains("s3cret") && !e.contains("p&ss"), "{}", e);
            }
        }
    }
}
