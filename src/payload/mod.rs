//! The Cool Popup event schema, checked in one pass over the body.
//!
//! A typed, borrowing walk with serde: no `serde_json::Value` tree is built.
//! Every object at every depth is checked for duplicate keys (serde_json
//! alone would keep the last), strings must be valid UTF-8 without lone
//! surrogates, and nesting is bounded by serde_json's recursion limit. Every
//! schema violation is collected with its JSON-pointer path; none is
//! reported with the offending value, so no visitor email or form field can
//! leak into an error body or a log line.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

crate::named::named_enum! {
    /// The four event kinds, by their wire names.
    pub enum EventKind {
        /// `popup.shown`
        Shown = "popup.shown",
        /// `popup.clicked`
        Clicked = "popup.clicked",
        /// `popup.converted`
        Converted = "popup.converted",
        /// `popup.closed`
        Closed = "popup.closed",
    }
}

/// The violation of an `event` that names none of the four.
static NOT_AN_EVENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    format!("must be one of {}", names.join(", "))
});

/// What the rest of the pipeline needs from a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event kind.
    pub kind: EventKind,
    /// The campaign id (1 to 256 bytes, no control characters: it becomes a header).
    pub campaign_id: Cow<'a, str>,
    /// When the event happened (the signed `timestamp`).
    pub timestamp: time::OffsetDateTime,
}

/// An authentic JSON object whose `event` is absent or none of the four
/// names (the provider's test ping, say): the route's `unknown_events`
/// decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown<'a> {
    /// The `event` string, if there is one.
    pub name: Option<Cow<'a, str>>,
    /// The `campaign_id`, when it meets the limits a header needs.
    pub campaign_id: Option<Cow<'a, str>>,
    /// What a route that rejects unknown events reports (422).
    pub violations: Vec<Violation>,
}

/// A body that passed: one of the four events, or an unknown one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validated<'a> {
    /// One of the four events, fully checked against the schema.
    Known(Event<'a>),
    /// An event hookgate does not know; only its JSON was checked.
    Unknown(Unknown<'a>),
}

/// One schema violation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer (RFC 6901) to the offending value, or where a missing one belongs.
    pub path: String,
    /// What is wrong, without repeating the value.
    pub message: &'static str,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not valid UTF-8 JSON, or an object with a duplicate key (400).
    InvalidJson(String),
    /// Valid JSON that breaks the schema (422); every violation is listed.
    Invalid(Vec<Violation>),
}

/// Parses and checks a body against the schema.
pub fn validate(body: &[u8]) -> Result<Validated<'_>, PayloadError> {
    // One UTF-8 check of the whole body is much cheaper than serde_json's
    // check of each string on its own, and accepts the same bodies: outside
    // strings any non-ASCII byte is a syntax error anyway.
    let text = std::str::from_utf8(body).map_err(|e| {
        PayloadError::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut top = TopLevel::default();
    let mut keys = Keys::with_capacity(64);
    let shape = Walk::new(&mut top, &mut keys)
        .deserialize(&mut de)
        .and_then(|shape| de.end().map(|()| shape))
        .map_err(|e| PayloadError::InvalidJson(json_error_message(&e)))?;
    if !matches!(shape, Shape::Object) {
        return Err(PayloadError::Invalid(vec![Violation {
            path: String::new(),
            message: "the body must be a JSON object",
        }]));
    }
    top.check()
}

/// serde_json's message names the problem and its position, never content
/// (our visitors accept every type, so no "invalid type: string \"...\"").
fn json_error_message(e: &serde_json::Error) -> String {
    e.to_string()
}

/// The JSON type of a walked value, keeping strings.
#[derive(Debug, Clone, PartialEq)]
enum Shape<'de> {
    Null,
    Bool,
    Number,
    Str(Cow<'de, str>),
    Array { scalars_only: bool },
    Object,
}

impl Shape<'_> {
    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Shape::Null | Shape::Bool | Shape::Number | Shape::Str(_)
        )
    }
}

/// Receives the entries of an object, each exactly once, and must consume
/// the value with `map.next_value_seed`.
trait Entries<'de> {
    fn entry<A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
        keys: &mut Keys<'de>,
    ) -> Result<(), A::Error>;
}

/// Walks any JSON value; objects are handed entry by entry to `handler`.
/// `keys` is the stack of the keys seen in the objects being walked, shared
/// by all depths so one request makes one allocation for it.
struct Walk<'h, 'de, H> {
    handler: &'h mut H,
    keys: &'h mut Keys<'de>,
}

impl<'h, 'de, H> Walk<'h, 'de, H> {
    fn new(handler: &'h mut H, keys: &'h mut Keys<'de>) -> Self {
        Self { handler, keys }
    }
}

/// Walks and discards (still checking duplicates and UTF-8 below it).
struct Ignore;

impl<'de> Entries<'de> for Ignore {
    fn entry<A: MapAccess<'de>>(
        &mut self,
        _key: Cow<'de, str>,
        map: &mut A,
        keys: &mut Keys<'de>,
    ) -> Result<(), A::Error> {
        map.next_value_seed(Walk::new(&mut Ignore, keys)).map(drop)
    }
}

impl<'de, H: Entries<'de>> DeserializeSeed<'de> for Walk<'_, 'de, H> {
    type Value = Shape<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, H: Entries<'de>> Visitor<'de> for Walk<'_, 'de, H> {
    type Value = Shape<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Shape::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Shape::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Shape::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Shape::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Shape::Number)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Shape::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut scalars_only = true;
        while let Some(item) = seq.next_element_seed(Walk::new(&mut Ignore, self.keys))? {
            scalars_only &= item.is_scalar();
        }
        Ok(Shape::Array { scalars_only })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = Seen {
            base: self.keys.len(),
            bloom: 0,
            large: None,
        };
        while let Some(Key(key)) = map.next_key()? {
            if !seen.insert(self.keys, key.clone()) {
                return Err(de::Error::custom("duplicate key in object"));
            }
            self.handler.entry(key, &mut map, self.keys)?;
        }
        self.keys.truncate(seen.base);
        Ok(Shape::Object)
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The keys of the objects being walked, innermost last, each with its
/// [`fingerprint`] so finding a duplicate compares integers and only calls
/// `memcmp` on a match. Keys without escapes are borrowed from the body, so
/// remembering one costs no allocation.
type Keys<'de> = Vec<(u64, Cow<'de, str>)>;

/// A set for the keys of one object with more than [`SMALL_OBJECT`] keys,
/// seeded per process so keys chosen to collide cannot make it quadratic.
type LargeKeys<'de> = HashSet<Cow<'de, str>, foldhash::fast::RandomState>;

/// Up to this many keys an object's keys are scanned linearly.
const SMALL_OBJECT: usize = 32;

/// The keys of one object being walked: its entries in the shared stack
/// start at `keys[base]`. `bloom` has one bit set per key (chosen by its
/// hash), so a key whose bit is clear is new without a scan.
struct Seen<'de> {
    base: usize,
    bloom: u64,
    large: Option<LargeKeys<'de>>,
}

impl<'de> Seen<'de> {
    /// Records `key`; false if the object already has it.
    fn insert(&mut self, keys: &mut Keys<'de>, key: Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key);
        }
        let hash = fingerprint(key.as_bytes());
        let bit = 1u64 << (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58);
        if self.bloom & bit != 0
            && keys[self.base..]
                .iter()
                .any(|(h, k)| *h == hash && *k == key)
        {
            return false;
        }
        self.bloom |= bit;
        if keys.len() - self.base < SMALL_OBJECT {
            keys.push((hash, key));
        } else {
            let mut set: LargeKeys<'de> = keys.drain(self.base..).map(|(_, k)| k).collect();
            set.insert(key);
            self.large = Some(set);
        }
        true
    }
}

/// A key's first and last eight bytes and its length, folded into 64 bits:
/// equal keys always agree, and two keys of the same length up to eight
/// bytes agree only if they are equal. Cheaper than hashing the key, and
/// enough here: a match is confirmed by comparing the keys, and an object
/// past [`SMALL_OBJECT`] keys moves to a seeded hash set, so keys chosen to
/// collide cost at most a scan of 32.
fn fingerprint(key: &[u8]) -> u64 {
    // Whole words are loaded at once; a short key byte by byte (a
    // variable-length copy into a word stalls the load that follows it).
    let word = |bytes: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        u64::from_le_bytes(b)
    };
    let n = key.len();
    let folded = match (key.get(..8), key.get(n.saturating_sub(8)..)) {
        (Some(head), Some(tail)) if n > 8 => word(head) ^ word(tail).rotate_left(29),
        (Some(head), _) => word(head),
        _ => key
            .iter()
            .rev()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
    };
    folded ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The top-level object's known fields, as walked.
#[derive(Default)]
struct TopLevel<'de> {
    event: Option<Shape<'de>>,
    campaign_id: Option<Shape<'de>>,
    campaign_name: Option<Shape<'de>>,
    timestamp: Option<Shape<'de>>,
    page_url: Option<Shape<'de>>,
    visitor: Option<(Shape<'de>, VisitorObject<'de>)>,
}

impl<'de> Entries<'de> for TopLevel<'de> {
    fn entry<A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
        keys: &mut Keys<'de>,
    ) -> Result<(), A::Error> {
        let slot = match key.as_ref() {
            "event" => &mut self.event,
            "campaign_id" => &mut self.campaign_id,
            "campaign_name" => &mut self.campaign_name,
            "timestamp" => &mut self.timestamp,
            "page_url" => &mut self.page_url,
            "visitor" => {
                let mut visitor = VisitorObject::default();
                let shape = map.next_value_seed(Walk::new(&mut visitor, keys))?;
                self.visitor = Some((shape, visitor));
                return Ok(());
            }
            _ => {
                return map.next_value_seed(Walk::new(&mut Ignore, keys)).map(drop);
            }
        };
        *slot = Some(map.next_value_seed(Walk::new(&mut Ignore, keys))?);
        Ok(())
    }
}

/// `visitor`'s known fields.
#[derive(Default)]
struct VisitorObject<'de> {
    email: Option<Shape<'de>>,
    fields: Option<(Shape<'de>, Fields)>,
}

impl<'de> Entries<'de> for VisitorObject<'de> {
    fn entry<A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
        keys: &mut Keys<'de>,
    ) -> Result<(), A::Error> {
        match key.as_ref() {
            "email" => self.email = Some(map.next_value_seed(Walk::new(&mut Ignore, keys))?),
            "fields" => {
                let mut fields = Fields::default();
                let shape = map.next_value_seed(Walk::new(&mut fields, keys))?;
                self.fields = Some((shape, fields));
            }
            _ => map
                .next_value_seed(Walk::new(&mut Ignore, keys))
                .map(drop)?,
        }
        Ok(())
    }
}

/// `visitor.fields`: collects the pointers of values that are not allowed.
#[derive(Default)]
struct Fields {
    bad: Vec<String>,
}

impl<'de> Entries<'de> for Fields {
    fn entry<A: MapAccess<'de>>(
        &mut self,
        key: Cow<'de, str>,
        map: &mut A,
        keys: &mut Keys<'de>,
    ) -> Result<(), A::Error> {
        let value = map.next_value_seed(Walk::new(&mut Ignore, keys))?;
        let ok = value.is_scalar() || matches!(value, Shape::Array { scalars_only: true });
        if !ok {
            self.bad
                .push(format!("/visitor/fields/{}", pointer_token(&key)));
        }
        Ok(())
    }
}

/// RFC 6901: `~` is written `~0` and `/` is written `~1`.
fn pointer_token(key: &str) -> Cow<'_, str> {
    if key.contains(['~', '/']) {
        Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(key)
    }
}

const MUST_BE_STRING: &str = "must be a string";
const REQUIRED: &str = "is required";

fn violation(out: &mut Vec<Violation>, path: &str, message: &'static str) {
    out.push(Violation {
        path: path.to_owned(),
        message,
    });
}

/// A required string field: reports missing / wrong type, returns the string.
fn required_str<'a, 'de>(
    out: &mut Vec<Violation>,
    path: &str,
    shape: &'a Option<Shape<'de>>,
) -> Option<&'a Cow<'de, str>> {
    match shape {
        None => {
            violation(out, path, REQUIRED);
            None
        }
        Some(Shape::Str(s)) => Some(s),
        Some(_) => {
            violation(out, path, MUST_BE_STRING);
            None
        }
    }
}

impl<'de> TopLevel<'de> {
    fn check(self) -> Result<Validated<'de>, PayloadError> {
        let mut out = Vec::new();
        // An absent event, or a string that names none of the four, is an
        // event hookgate does not know (the provider's test ping); any other
        // type (42, null) is a malformed body.
        let mut unknown: Option<Option<Cow<'de, str>>> = None;
        let kind = match &self.event {
            None => {
                unknown = Some(None);
                violation(&mut out, "/event", REQUIRED);
                None
            }
            Some(Shape::Str(name)) => {
                let kind = EventKind::from_name(name);
                if kind.is_none() {
                    unknown = Some(Some(name.clone()));
                    violation(&mut out, "/event", &NOT_AN_EVENT);
                }
                kind
            }
            Some(_) => {
                violation(&mut out, "/event", MUST_BE_STRING);
                None
            }
        };
        let campaign_id = required_str(&mut out, "/campaign_id", &self.campaign_id);
        if let Some(id) = campaign_id
            && let Err(message) = check_campaign_id(id)
        {
            violation(&mut out, "/campaign_id", message);
        }
        if let Some(name) = unknown {
            // Nothing else is checked for an event hookgate cannot judge; the
            // violations are kept for routes that reject unknown events.
            let campaign_id = campaign_id
                .filter(|id| check_campaign_id(id).is_ok())
                .cloned();
            return Ok(Validated::Unknown(Unknown {
                name,
                campaign_id,
                violations: out,
            }));
        }
        required_str(&mut out, "/campaign_name", &self.campaign_name);
        let mut timestamp = None;
        if let Some(ts) = required_str(&mut out, "/timestamp", &self.timestamp) {
            let format = time::format_description::well_known::Rfc3339;
            match time::OffsetDateTime::parse(ts, &format) {
                Ok(t) => timestamp = Some(t),
                Err(_) => violation(
                    &mut out,
                    "/timestamp",
                    "must be an RFC 3339 date-time with offset, e.g. 2026-04-26T12:00:00Z",
                ),
            }
        }
        if let Some(u) = required_str(&mut out, "/page_url", &self.page_url)
            && !is_web_url(u)
        {
            violation(
                &mut out,
                "/page_url",
                "must be an absolute http or https URL",
            );
        }
        let converted = kind == Some(EventKind::Converted);
        match &self.visitor {
            // `null` is the same as absent.
            None | Some((Shape::Null, _)) if converted => {
                violation(&mut out, "/visitor", "is required on popup.converted")
            }
            None | Some((Shape::Null, _)) => {}
            Some((shape, _)) if *shape != Shape::Object => {
                violation(&mut out, "/visitor", "must be an object")
            }
            Some((_, v)) => v.check(converted, &mut out),
        }
        match (kind, campaign_id, timestamp) {
            (Some(kind), Some(id), Some(timestamp)) if out.is_empty() => {
                Ok(Validated::Known(Event {
                    kind,
                    campaign_id: id.clone(),
                    timestamp,
                }))
            }
            _ => Err(PayloadError::Invalid(out)),
        }
    }
}

/// The longest `campaign_id` accepted, in bytes of UTF-8 (it becomes a header).
pub const MAX_CAMPAIGN_ID_BYTES: usize = 256;

/// `campaign_id`: 1 to 256 bytes, no control character (Unicode Cc), not
/// only white space.
fn check_campaign_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("must not be empty")
    } else if id.len() > MAX_CAMPAIGN_ID_BYTES {
        Err("must be at most 256 bytes")
    } else if id.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else if id.chars().all(char::is_whitespace) {
        Err("must not be only white space")
    } else {
        Ok(())
    }
}

impl VisitorObject<'_> {
    fn check(&self, converted: bool, out: &mut Vec<Violation>) {
        match &self.email {
            None | Some(Shape::Null) if converted => {
                violation(out, "/visitor/email", "is required on popup.converted")
            }
            None | Some(Shape::Null) => {}
            Some(Shape::Str(email)) if !is_plausible_email(email) => {
                violation(out, "/visitor/email", "must be a plausible email address");
            }
            Some(Shape::Str(_)) => {}
            Some(_) => violation(out, "/visitor/email", MUST_BE_STRING),
        }
        match &self.fields {
            None | Some((Shape::Null, _)) if converted => {
                violation(out, "/visitor/fields", "is required on popup.converted")
            }
            None | Some((Shape::Null, _)) => {}
            Some((Shape::Object, fields)) => {
                for path in &fields.bad {
                    out.push(Violation {
                        path: path.clone(),
                        message: "must be a string, number, boolean, null, or an array of those",
                    });
                }
            }
            Some(_) => violation(out, "/visitor/fields", "must be an object"),
        }
    }
}

/// An absolute `http`/`https` URL with a host.
fn is_web_url(s: &str) -> bool {
    plain_web_url(s) || url_says_web_url(s)
}

/// The WHATWG parse (the `url` crate): the authority on what is a URL.
fn url_says_web_url(s: &str) -> bool {
    match url::Url::parse(s) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host().is_some(),
        Err(_) => false,
    }
}

/// The usual `page_url`, recognised without the full parse (which costs a
/// tenth of a whole validation): `http://` or `https://`, then a host made
/// of non-empty dot-separated labels of lowercase letters, digits and `-`
/// (no `xn--` label, and a last label that is neither all digits nor
/// `0x…`, which the URL standard would read as an IPv4 address), an
/// optional port of at most 65535, and then only printable ASCII, since the
/// standard rejects no path, query or fragment. Anything else is left to
/// [`url_says_web_url`], so this can only say yes where the `url` crate
/// says yes too (tested against it exhaustively over a small alphabet).
fn plain_web_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port
        && !(port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|n| n <= 65_535))
    {
        return false;
    }
    let mut last = "";
    for label in host.split('.') {
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if label.is_empty() || label.starts_with("xn--") || !label.bytes().all(plain) {
            return false;
        }
        last = label;
    }
    !last.bytes().all(|b| b.is_ascii_digit()) && !last.starts_with("0x")
}

/// RFC 5322-ish address (the `email_address` crate) whose domain has a dot:
/// `jane@example.com`, not `jane@localhost` or `jane`.
fn is_plausible_email(s: &str) -> bool {
    s.len() <= 254 && (plain_email(s) || email_address_says_plausible(s))
}

/// The `email_address` crate's verdict: the authority.
fn email_address_says_plausible(s: &str) -> bool {
    let options = email_address::Options::default()
        .with_required_tld()
        .without_domain_literal();
    email_address::EmailAddress::parse_with_options(s, options).is_ok()
}

/// The usual address, recognised without the crate's general parse (which
/// also copies the address): one `@`; a local part of at most 64 bytes,
/// dot-separated non-empty runs of ASCII letters, digits, `_`, `+` and `-`;
/// a domain of at least two dot-separated labels of ASCII letters, digits
/// and `-`, each 1 to 63 bytes, beginning and ending with a letter or
/// digit. Anything else is left to [`email_address_says_plausible`], so
/// this can only say yes where the crate says yes too (tested against it
/// exhaustively over a small alphabet).
fn plain_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
        });
    let mut labels = 0;
    let domain_ok = domain.split('.').all(|label| {
        labels += 1;
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    });
    local_ok && domain_ok && labels >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to `max_len` characters over `alphabet`, the empty one included.
    fn every_string(alphabet: &[u8], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|t| alphabet.iter().map(move |&c| format!("{t}{}", c as char)))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn fingerprints_agree_on_equal_keys_and_tell_short_keys_apart() {
        let keys: Vec<Vec<u8>> = (0..=17)
            .flat_map(|n| {
                (0..4u8).map(move |v| (0..n).map(|i| b'a' + ((i as u8 + v) % 26)).collect())
            })
            .chain([b"field_10".to_vec(), b"field_11".to_vec(), b"a\0".to_vec()])
            .collect();
        for a in &keys {
            assert_eq!(fingerprint(a), fingerprint(&a.clone()));
            for b in &keys {
                if a.len() == b.len() && a.len() <= 8 && a != b {
                    assert_ne!(fingerprint(a), fingerprint(b), "{a:?} {b:?}");
                }
            }
        }
    }

    /// `plain_email` may only accept what `email_address` accepts: every
    /// string of up to six characters over an alphabet that reaches each of
    /// its rules, plus the lengths at the limits.
    #[test]
    fn the_email_fast_path_never_accepts_what_the_crate_rejects() {
        let mut all = every_string(b"a0.-_@+A", 6);
        let label = |n: usize| "b".repeat(n);
        all.extend([
            format!("{}@example.com", "a".repeat(64)),
            format!("{}@example.com", "a".repeat(65)),
            format!("jane@{}.com", label(63)),
            format!("jane@{}.com", label(64)),
            format!(
                "jane@{}.{}.{}.{}",
                label(63),
                label(63),
                label(63),
                label(60)
            ),
            "jane.doe+tag@mail.example.co.uk".to_owned(),
            "jane@localhost".to_owned(),
            "jane@-a.com".to_owned(),
            "jane@a-.com".to_owned(),
            "a@b@c.com".to_owned(),
            "\"jane\"@example.com".to_owned(),
            "Jane <jane@example.com>".to_owned(),
        ]);
        let mut accepted = 0;
        for s in &all {
            if is_plausible_email(s) != (s.len() <= 254 && email_address_says_plausible(s)) {
                panic!("{s:?}: the fast path and the crate disagree");
            }
            if plain_email(s) {
                accepted += 1;
                assert!(email_address_says_plausible(s), "fast path accepted {s:?}");
            }
        }
        assert!(accepted > 500, "the fast path accepted only {accepted}");
        assert!(plain_email("jane@example.com"));
        assert!(!plain_email("jane@localhost"));
    }

    /// `plain_web_url` may only accept what the `url` crate accepts: every
    /// string of up to five characters over an alphabet that reaches each of
    /// its rules, after both prefixes, plus the cases that need more room.
    #[test]
    fn the_url_fast_path_never_accepts_what_url_rejects() {
        let mut all = every_string(b"a09x-.:/@%nA", 5);
        all.extend(
            [
                "a:65535",
                "a:65536",
                "a:099999",
                "a:",
                "a.b:80/x",
                "xn--a.b",
                "a.xn--b",
                "xn--abc",
                "a.0x1f",
                "a.0xg",
                "1.2.3.4",
                "1.2.3.256",
                "a.123",
                "a.12b",
                "-a-.b-",
                "a..b",
                "a.b.",
                ".a",
                "aa--b.c",
                "a.b?q=1#f",
                "a.b\\c",
                "u@a.b",
                "a%2eb.c",
                "0x.a",
                "a.0x",
            ]
            .map(String::from),
        );
        all.push(format!("{}.com", "a".repeat(300)));
        let mut accepted = 0;
        for tail in &all {
            for prefix in ["http://", "https://"] {
                let s = format!("{prefix}{tail}");
                if plain_web_url(&s) {
                    accepted += 1;
                    assert!(
                        url_says_web_url(&s),
                        "fast path accepted {s:?}, url rejects it"
                    );
                }
            }
        }
        assert!(accepted > 10_000, "the fast path accepted only {accepted}");
        for s in [
            "https://yoursite.com/products/summer-sale",
            "http://localhost:8080/x?y#z",
            "https://a-b.example.co.uk",
        ] {
            assert!(plain_web_url(s), "{s}");
        }
        for s in [
            "HTTPS://yoursite.com/",
            "https://bücher.example/",
            "https://user@example.com/",
            "https://example.com/a b",
            "ftp://example.com/",
            "http://127.0.0.1/",
        ] {
            assert!(!plain_web_url(s), "{s}: left to the url crate");
        }
    }

    const CONVERTED: &str = r#"{
        "event": "popup.converted",
        "campaign_id": "camp_abc123",
        "campaign_name": "Summer Sale Popup",
        "timestamp": "2026-04-26T12:00:00Z",
        "visitor": {
            "email": "jane@example.com",
            "fields": { "name": "Jane Smith", "email": "jane@example.com" }
        },
        "page_url": "https://yoursite.com/products/summer-sale"
    }"#;

    fn paths(body: &str) -> Vec<String> {
        match validate(body.as_bytes()) {
            Err(PayloadError::Invalid(v)) => v.into_iter().map(|v| v.path).collect(),
            other => panic!("expected violations, got {other:?}"),
        }
    }

    fn known(body: &str) -> Event<'_> {
        match validate(body.as_bytes()) {
            Ok(Validated::Known(e)) => e,
            other => panic!("expected a known event, got {other:?}"),
        }
    }

    fn unknown(body: &str) -> Unknown<'_> {
        match validate(body.as_bytes()) {
            Ok(Validated::Unknown(u)) => u,
            other => panic!("expected an unknown event, got {other:?}"),
        }
    }

    fn is_invalid_json(body: &[u8]) -> bool {
        matches!(validate(body), Err(PayloadError::InvalidJson(_)))
    }

    #[test]
    fn accepts_the_spec_example() {
        let e = known(CONVERTED);
        assert_eq!(e.kind, EventKind::Converted);
        assert_eq!(e.timestamp.unix_timestamp(), 1_777_204_800);
        assert_eq!(e.campaign_id, "camp_abc123");
        assert!(
            matches!(e.campaign_id, Cow::Borrowed(_)),
            "no copy for a plain string"
        );
    }

    #[test]
    fn other_events_need_no_visitor_and_allow_unknown_fields() {
        for kind in ["popup.shown", "popup.clicked", "popup.closed"] {
            let body = format!(
                r#"{{"event":"{kind}","campaign_id":"c","campaign_name":"","timestamp":"2026-04-26T12:00:00+02:00","page_url":"http://x.example/","extra":{{"a":[1,{{"b":null}}]}}}}"#
            );
            assert_eq!(known(&body).kind.as_str(), kind);
        }
    }

    #[test]
    fn every_violation_is_listed_at_its_own_path() {
        let body = r#"{"event":"popup.converted","campaign_id":"","timestamp":"yesterday","page_url":"not a url"}"#;
        let got = paths(body);
        for want in [
            "/campaign_id",
            "/campaign_name",
            "/timestamp",
            "/page_url",
            "/visitor",
        ] {
            assert!(got.iter().any(|p| p == want), "{want} missing from {got:?}");
        }
    }

    #[test]
    fn visitor_problems_have_nested_paths() {
        let body = CONVERTED
            .replace("\"jane@example.com\",\n", "\"not-an-email\",\n")
            .replace("\"Jane Smith\"", "{\"first\":\"Jane\"}");
        assert_eq!(paths(&body), vec!["/visitor/email", "/visitor/fields/name"]);
    }

    #[test]
    fn field_values_may_be_scalars_or_arrays_of_scalars() {
        let body = CONVERTED.replace(
            "\"name\": \"Jane Smith\"",
            "\"n\": 1, \"b\": true, \"z\": null, \"list\": [\"a\", 2, false, null], \"a/b~c\": [[1]]",
        );
        assert_eq!(paths(&body), vec!["/visitor/fields/a~1b~0c"]);
    }

    #[test]
    fn converted_requires_visitor_email_and_fields() {
        let body = CONVERTED.replace("\"email\": \"jane@example.com\",\n", "");
        assert_eq!(paths(&body), vec!["/visitor/email"]);
        let no_visitor = r#"{"event":"popup.converted","campaign_id":"c","campaign_name":"n","timestamp":"2026-04-26T12:00:00Z","page_url":"https://a.example/"}"#;
        assert_eq!(paths(no_visitor), vec!["/visitor"]);
    }

    #[test]
    fn visitor_on_other_events_must_still_be_well_formed() {
        let body = r#"{"event":"popup.shown","campaign_id":"c","campaign_name":"n","timestamp":"2026-04-26T12:00:00Z","page_url":"https://a.example/","visitor":{"email":5}}"#;
        assert_eq!(paths(body), vec!["/visitor/email"]);
        let body = body.replace("{\"email\":5}", "[]");
        assert_eq!(paths(&body), vec!["/visitor"]);
    }

    #[test]
    fn unknown_events_are_told_apart_from_malformed_ones() {
        let u = unknown(r#"{"event":"ping"}"#);
        assert_eq!(u.name.as_deref(), Some("ping"));
        assert_eq!(u.campaign_id, None);
        let u = unknown("{}");
        assert_eq!(u.name, None);
        let paths: Vec<&str> = u.violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/event", "/campaign_id"],
            "kept for routes that reject"
        );
        let u = unknown(r#"{"event":"popup.hovered","campaign_id":"camp_1","page_url":5}"#);
        assert_eq!(u.campaign_id.as_deref(), Some("camp_1"));
        assert_eq!(
            u.violations[0].message,
            "must be one of popup.shown, popup.clicked, popup.converted, popup.closed"
        );
        assert_eq!(
            unknown(r#"{"event":"x","campaign_id":" "}"#).campaign_id,
            None
        );
        // An event that is not a string is a malformed body, not an unknown one.
        for body in [
            r#"{"event":42}"#,
            r#"{"event":null}"#,
            r#"{"event":["ping"]}"#,
        ] {
            assert!(
                paths_of_invalid(body).contains(&"/event".to_owned()),
                "{body}"
            );
        }
        // Duplicate keys are still invalid JSON, whatever the event.
        assert!(is_invalid_json(br#"{"event":"ping","a":1,"a":2}"#));
    }

    fn paths_of_invalid(body: &str) -> Vec<String> {
        paths(body)
    }

    #[test]
    fn null_is_absent_for_optional_fields_and_missing_on_converted() {
        let base = r#"{"event":"EV","campaign_id":"c","campaign_name":"n","timestamp":"2026-04-26T12:00:00Z","page_url":"https://a.example/","visitor":VIS}"#;
        for visitor in [
            "null",
            r#"{"email":null,"fields":null}"#,
            r#"{"email":"j@example.com","fields":null}"#,
        ] {
            let body = base.replace("EV", "popup.shown").replace("VIS", visitor);
            assert_eq!(known(&body).kind, EventKind::Shown, "{visitor}");
        }
        for (visitor, want) in [
            ("null", "/visitor"),
            (r#"{"email":null,"fields":{}}"#, "/visitor/email"),
            (
                r#"{"email":"j@example.com","fields":null}"#,
                "/visitor/fields",
            ),
        ] {
            let body = base
                .replace("EV", "popup.converted")
                .replace("VIS", visitor);
            assert_eq!(paths(&body), vec![want], "{visitor}");
        }
        let body = base
            .replace("EV", "popup.shown")
            .replace("VIS", "null")
            .replace(r#""n""#, "null");
        assert_eq!(
            paths(&body),
            vec!["/campaign_name"],
            "campaign_name is required, not optional"
        );
    }

    #[test]
    fn campaign_id_limits() {
        let base = r#"{"event":"popup.shown","campaign_id":ID,"campaign_name":"n","timestamp":"2026-04-26T12:00:00Z","page_url":"https://a.example/"}"#;
        let ok = |id: &str| {
            known(&base.replace("ID", &serde_json::to_string(id).unwrap()))
                .campaign_id
                .into_owned()
        };
        assert_eq!(ok(&"é".repeat(128)), "é".repeat(128), "256 bytes");
        assert_eq!(ok(" a "), " a ");
        let long = serde_json::to_string(&"x".repeat(257)).unwrap();
        let long_utf8 = serde_json::to_string(&"é".repeat(129)).unwrap();
        // JSON literals: empty, only white space, too long (bytes, not
        // characters), a C0 and a C1 control character.
        for bad in [
            r#""""#,
            r#"" ""#,
            r#""\t\n""#,
            &long,
            &long_utf8,
            r#""a\u0007b""#,
            r#""a\u0085b""#,
        ] {
            assert_eq!(
                paths(&base.replace("ID", bad)),
                vec!["/campaign_id"],
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_types_are_listed() {
        let body = r#"{"event":"popup.shown","campaign_id":7,"campaign_name":null,"timestamp":1,"page_url":"ftp://x.example/"}"#;
        assert_eq!(
            paths(body),
            vec!["/campaign_id", "/campaign_name", "/timestamp", "/page_url"]
        );
    }

    #[test]
    fn non_object_bodies_are_schema_errors() {
        for body in ["[]", "\"popup.shown\"", "1", "null"] {
            assert_eq!(paths(body), vec![""], "{body}");
        }
    }

    #[test]
    fn duplicate_keys_are_invalid_json_at_any_depth() {
        assert!(is_invalid_json(
            br#"{"event":"popup.shown","event":"popup.closed"}"#
        ));
        assert!(is_invalid_json(br#"{"x":{"a":1,"a":2}}"#));
        assert!(is_invalid_json(br#"{"x":[{"a":1,"\u0061":2}]}"#));
        let mut many = String::from("{");
        for i in 0..100 {
            many.push_str(&format!("\"k{i}\":{i},"));
        }
        many.push_str("\"k42\":0}");
        assert!(is_invalid_json(many.as_bytes()));
    }

    /// The keys of nested objects share one stack: a key is a duplicate only
    /// within its own object, before and after a nested object, small or large.
    #[test]
    fn duplicate_keys_are_per_object() {
        let ok = |body: &str| !is_invalid_json(body.as_bytes());
        assert!(ok(r#"{"a":{"b":1},"b":2,"c":{"a":1,"b":[{"a":1}]}}"#));
        assert!(is_invalid_json(br#"{"b":1,"a":{"c":1},"b":2}"#));
        assert!(is_invalid_json(
            br#"{"a":{"c":1},"b":{"c":1,"d":{},"c":2}}"#
        ));
        let large = |extra: &str| {
            let keys: Vec<String> = (0..40)
                .map(|i| format!("\"k{i}\":{{\"k{i}\":1}}"))
                .collect();
            format!("{{\"x\":1,{},{extra}\"y\":1}}", keys.join(","))
        };
        assert!(ok(&large("")));
        assert!(ok(&large(r#""z":{"x":1,"y":1},"#)));
        assert!(is_invalid_json(large(r#""x":2,"#).as_bytes()));
        assert!(is_invalid_json(large(r#""k39":2,"#).as_bytes()));
        assert!(is_invalid_json(large(r#""k7":2,"#).as_bytes()));
    }

    #[test]
    fn broken_json_is_invalid_json() {
        assert!(is_invalid_json(b"{\"event\": \"popup.shown\", "));
        assert!(is_invalid_json(b"{} trailing"));
        assert!(is_invalid_json(b""));
        assert!(
            is_invalid_json(b"{\"a\":\"\xff\"}"),
            "invalid UTF-8 in a string"
        );
        assert!(is_invalid_json(b"{\"a\":\"\\ud800\"}"), "lone surrogate");
        assert!(is_invalid_json(&[b'['; 100_000]), "deep nesting is bounded");
    }

    #[test]
    fn campaign_id_with_control_characters_is_refused() {
        let body = CONVERTED.replace("camp_abc123", "camp\\u0000x");
        assert_eq!(paths(&body), vec!["/campaign_id"]);
    }

    #[test]
    fn messages_never_repeat_values() {
        let body = CONVERTED.replace("\"jane@example.com\",\n", "\"secret-visitor-value\",\n");
        let Err(PayloadError::Invalid(v)) = validate(body.as_bytes()) else {
            panic!("expected violations")
        };
        for violation in v {
            assert!(!violation.message.contains("secret-visitor-value"));
        }
    }
}
