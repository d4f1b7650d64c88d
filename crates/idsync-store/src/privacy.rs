//! Crypto-shredding: personal fields of events encrypted per user, forgotten by
//! destroying the user's key (docs/privacy.md).
//!
//! - The key-encryption key (KEK) comes from `IDSYNC_DATA_KEY` (`v1:` + base64 of 32
//!   bytes) and never reaches the database. Its id (a hash of it) is stored beside what
//!   it wrapped, so a wrong key is told as such and rotation knows what to rewrap.
//! - Each user has a random 256-bit data key in `user_data_keys`, wrapped by the KEK with
//!   AES-256-GCM-SIV (associated data: the user's pk, so a wrapped key cannot be moved
//!   to another user).
//! - In an event payload, the personal fields ([`PERSONAL_FIELDS`]) present are replaced
//!   by one member `"sealed": {"fields": [...], "c": "<base64 nonce || ciphertext>"}`,
//!   AES-256-GCM-SIV under the user's data key with the aggregate id and the event's
//!   sequence as associated data: a ciphertext copied into another event does not open.
//!   The names of the sealed fields stay readable so that, once the key is gone, readers
//!   know which fields to show as erased. `"c": null` marks fields erased from an event
//!   written before encryption (`strip`).
//!
//! The keyring is process-wide ([`install`]): every reader of the log (feeds, API,
//! projector, replay, the aggregate's load) must open sealed fields, and threading a
//! handle through each of them would change a dozen signatures for one setting that is
//! fixed for the life of the process.

use std::sync::{Arc, RwLock};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use idsync_domain::PERSONAL_FIELDS;
use rand::RngCore as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The one key format: a version prefix, then standard base64 of 32 random bytes.
pub const KEY_PREFIX: &str = "v1:";
/// `IDSYNC_DATA_KEY=development`: the development key, chosen on purpose.
pub const DEVELOPMENT: &str = "development";
/// The member of a payload that holds its personal fields, encrypted.
pub const SEALED: &str = "sealed";

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivacyError {
    #[error("IDSYNC_DATA_KEY: {0}")]
    BadKey(String),
    #[error(
        "user {pk}'s personal data is encrypted, but no IDSYNC_DATA_KEY is configured in this process"
    )]
    NoKeyring { pk: i64 },
    #[error(
        "user {pk}'s data key is wrapped by key {kek_id}, which is neither IDSYNC_DATA_KEY nor one of IDSYNC_DATA_KEY_PREVIOUS"
    )]
    UnknownKek { pk: i64, kek_id: String },
    #[error(
        "user {pk}'s data key does not open with key {kek_id}: the key or the stored data key was altered"
    )]
    Unwrap { pk: i64, kek_id: String },
    #[error(
        "user {pk}, event {sequence}: the encrypted personal fields do not open with the user's key (moved or altered ciphertext)"
    )]
    Tampered { pk: i64, sequence: i64 },
    #[error("user {pk}, event {sequence}: malformed sealed fields: {reason}")]
    Malformed {
        pk: i64,
        sequence: i64,
        reason: String,
    },
}

/// A key-encryption key.
#[derive(Clone)]
pub struct Kek {
    id: String,
    cipher: Aes256GcmSiv,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish()
    }
}

impl Kek {
    /// `v1:<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, PrivacyError> {
        let text = text.trim();
        let Some(b64) = text.strip_prefix(KEY_PREFIX) else {
            return Err(PrivacyError::BadKey(format!(
                "expected {KEY_PREFIX}<base64 of 32 bytes> (make one with `idsync keygen`)"
            )));
        };
        let bytes = B64
            .decode(b64)
            .map_err(|e| PrivacyError::BadKey(format!("not base64: {e}")))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            PrivacyError::BadKey(format!("{} bytes; a key is 32 bytes", bytes.len()))
        })?;
        Ok(Self::from_bytes(&key))
    }

    /// The development key: derived from a fixed, public text. It protects nothing; it
    /// exists so a new database runs without configuration (logged loudly).
    pub fn development() -> Self {
        let key: [u8; 32] =
            Sha256::digest(b"idsync development data key: public, protects nothing").into();
        Self::from_bytes(&key)
    }

    fn from_bytes(key: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"idsync:kek-id:");
        hash.update(key);
        let digest = hash.finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            cipher: Aes256GcmSiv::new(key.into()),
        }
    }

    /// Derived from the key (16 hex digits); safe to store and log.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, pk: i64, data_key: &[u8; 32]) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: data_key,
                        aad: wrap_ad(pk).as_bytes(),
                    },
                )
                .expect("AES-GCM-SIV encrypts any message under 64 GiB"),
        );
        out
    }

    fn unwrap(&self, pk: i64, wrapped: &[u8]) -> Result<[u8; 32], PrivacyError> {
        let fail = || PrivacyError::Unwrap {
            pk,
            kek_id: self.id.clone(),
        };
        if wrapped.len() <= NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let key = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: wrap_ad(pk).as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        key.as_slice().try_into().map_err(|_| fail())
    }
}

/// A new key-encryption key in the format [`Kek::parse`] reads.
pub fn generate() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{KEY_PREFIX}{}", B64.encode(key))
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn wrap_ad(pk: i64) -> String {
    format!("idsync:dk:{pk}")
}

/// Associated data of an event's sealed fields: the aggregate and the position in it.
fn event_ad(pk: i64, sequence: i64) -> String {
    format!("idsync:event:User:{pk}:{sequence}")
}

/// A user's data key, unwrapped.
pub struct DataKey(Aes256GcmSiv);

/// The configured key-encryption keys, and the data keys unwrapped so far.
pub struct Keyring {
    current: Kek,
    previous: Vec<Kek>,
    development: bool,
    /// Unwrapped data keys by pk and wrapped bytes (see [`cache_key`]). The wrapped bytes
    /// include a random nonce, so a rewrapped or recreated key is a new entry; an erased
    /// one is never looked up again (its row is gone).
    cache: quick_cache::sync::Cache<Vec<u8>, Arc<DataKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .field("development", &self.development)
            .finish()
    }
}

/// Data keys kept unwrapped: enough for every user of a large directory during replay.
const CACHED_KEYS: usize = 250_000;

impl Keyring {
    pub fn new(current: Kek, previous: Vec<Kek>) -> Self {
        let development = current.id == Kek::development().id;
        Self {
            current,
            previous,
            development,
            cache: quick_cache::sync::Cache::new(CACHED_KEYS),
        }
    }

    pub fn current(&self) -> &Kek {
        &self.current
    }

    /// Whether the current key is the (public) development key.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Whether a key with this id is configured.
    pub fn knows(&self, kek_id: &str) -> bool {
        self.kek(kek_id).is_some()
    }

    fn kek(&self, kek_id: &str) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kek_id)
    }

    /// The data key stored for `pk` as `wrapped` by key `kek_id`.
    pub fn data_key(
        &self,
        pk: i64,
        wrapped: &[u8],
        kek_id: &str,
    ) -> Result<Arc<DataKey>, PrivacyError> {
        let cache_key = cache_key(pk, wrapped);
        if let Some(key) = self.cache.get(&cache_key) {
            return Ok(key);
        }
        let kek = self.kek(kek_id).ok_or_else(|| PrivacyError::UnknownKek {
            pk,
            kek_id: kek_id.to_owned(),
        })?;
        let bytes = kek.unwrap(pk, wrapped)?;
        let key = Arc::new(DataKey(Aes256GcmSiv::new((&bytes).into())));
        self.cache.insert(cache_key, key.clone());
        Ok(key)
    }

    /// A new data key for `pk`: the key, and its wrapped form to store.
    pub fn new_data_key(&self, pk: i64) -> (Arc<DataKey>, Vec<u8>) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let wrapped = self.current.wrap(pk, &bytes);
        let key = Arc::new(DataKey(Aes256GcmSiv::new((&bytes).into())));
        self.cache.insert(cache_key(pk, &wrapped), key.clone());
        (key, wrapped)
    }

    /// `wrapped` (by `kek_id`) wrapped again by the current key.
    pub fn rewrap(&self, pk: i64, wrapped: &[u8], kek_id: &str) -> Result<Vec<u8>, PrivacyError> {
        let kek = self.kek(kek_id).ok_or_else(|| PrivacyError::UnknownKek {
            pk,
            kek_id: kek_id.to_owned(),
        })?;
        let bytes = kek.unwrap(pk, wrapped)?;
        Ok(self.current.wrap(pk, &bytes))
    }
}

/// The pk is part of it: a wrapped key is bound to its user (unwrapping checks that), and
/// a cached one must not skip that check.
fn cache_key(pk: i64, wrapped: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + wrapped.len());
    key.extend_from_slice(&pk.to_be_bytes());
    key.extend_from_slice(wrapped);
    key
}

static KEYRING: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

/// Makes `keyring` the process's: events written from now on are sealed with it.
/// Without one, events are written in plaintext (library use, older tests) and sealed
/// events cannot be read.
pub fn install(keyring: Option<Keyring>) {
    let mut slot = KEYRING.write().unwrap_or_else(|e| e.into_inner());
    *slot = keyring.map(Arc::new);
}

/// The process's keyring, if one is installed.
pub fn keyring() -> Option<Arc<Keyring>> {
    KEYRING.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether this payload object (the inner one, untagged) has personal fields in
/// plaintext.
pub fn has_plaintext(inner: &Map<String, Value>) -> bool {
    PERSONAL_FIELDS.iter().any(|f| inner.contains_key(*f))
}

/// Replaces the personal fields of `inner` (an event's payload object, untagged) by
/// their ciphertext under `key`, bound to event `sequence` of user `pk`. Nothing happens
/// when it has none.
pub fn seal(
    inner: &mut Map<String, Value>,
    key: &DataKey,
    pk: i64,
    sequence: i64,
) -> Result<(), PrivacyError> {
    let mut personal = Map::new();
    let mut names = Vec::new();
    for field in PERSONAL_FIELDS {
        if let Some(value) = inner.remove(field) {
            personal.insert(field.to_owned(), value);
            names.push(Value::from(field));
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let plaintext = serde_json::to_vec(&personal).map_err(|e| PrivacyError::Malformed {
        pk,
        sequence,
        reason: e.to_string(),
    })?;
    let nonce = random_nonce();
    let mut sealed = nonce.to_vec();
    sealed.extend(
        key.0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: event_ad(pk, sequence).as_bytes(),
                },
            )
            .expect("AES-GCM-SIV encrypts any message under 64 GiB"),
    );
    let mut member = Map::new();
    member.insert("fields".to_owned(), Value::Array(names));
    member.insert("c".to_owned(), Value::String(B64.encode(sealed)));
    inner.insert(SEALED.to_owned(), Value::Object(member));
    Ok(())
}

/// Removes the personal fields of `inner` for good (an event written before encryption,
/// of a user being erased): they become a sealed member without ciphertext, which
/// readers show as erased. Returns whether anything was removed.
pub fn strip(inner: &mut Map<String, Value>) -> bool {
    let names: Vec<Value> = PERSONAL_FIELDS
        .iter()
        .filter(|f| inner.remove(**f).is_some())
        .map(|f| Value::from(*f))
        .collect();
    if names.is_empty() {
        return false;
    }
    let mut member = Map::new();
    member.insert("fields".to_owned(), Value::Array(names));
    member.insert("c".to_owned(), Value::Null);
    inner.insert(SEALED.to_owned(), Value::Object(member));
    true
}

/// How a reader wants erased fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    /// `null` each, plus `"erased": true`: what the API and the feeds publish.
    Null,
    /// The empty string each (`uid` left out): what typed readers (the aggregate, the
    /// read model) deserialise, the same values erasure leaves in the aggregate.
    Blank,
}

/// The stored data key of a user, as a reader fetched it beside an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey<'a> {
    pub wrapped: &'a [u8],
    pub kek_id: &'a str,
}

/// The sealed member as typed readers (replay) deserialise it, straight from the text.
#[derive(Debug, serde::Deserialize)]
pub struct Sealed {
    pub fields: Vec<String>,
    pub c: Option<String>,
}

/// The personal fields of one event, opened: each `None` when the event does not carry
/// it; once erased, the [`Erased::Blank`] values.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Personal {
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// [`open`] for typed readers: the personal fields of `sealed` (event `sequence` of user
/// `pk`), without going through `serde_json::Value`.
pub fn open_typed(
    sealed: &Sealed,
    pk: i64,
    sequence: i64,
    key: Option<StoredKey<'_>>,
) -> Result<Personal, PrivacyError> {
    let (Some(ciphertext), Some(key)) = (&sealed.c, key) else {
        let blank = |name: &str| sealed.fields.iter().any(|f| f == name).then(String::new);
        return Ok(Personal {
            username: blank("username"),
            email: blank("email"),
            name: blank("name"),
            uid: None,
        });
    };
    let plaintext = decrypt(ciphertext, pk, sequence, key)?;
    serde_json::from_slice(&plaintext).map_err(|_| PrivacyError::Malformed {
        pk,
        sequence,
        reason: "plaintext is not an object".to_owned(),
    })
}

fn decrypt(
    ciphertext: &str,
    pk: i64,
    sequence: i64,
    key: StoredKey<'_>,
) -> Result<Vec<u8>, PrivacyError> {
    let malformed = |reason: &str| PrivacyError::Malformed {
        pk,
        sequence,
        reason: reason.to_owned(),
    };
    let keyring = keyring().ok_or(PrivacyError::NoKeyring { pk })?;
    let data_key = keyring.data_key(pk, key.wrapped, key.kek_id)?;
    let bytes = B64
        .decode(ciphertext)
        .map_err(|_| malformed("ciphertext is not base64"))?;
    if bytes.len() <= NONCE_LEN {
        return Err(malformed("ciphertext too short"));
    }
    let (nonce, ct) = bytes.split_at(NONCE_LEN);
    data_key
        .0
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: event_ad(pk, sequence).as_bytes(),
            },
        )
        .map_err(|_| PrivacyError::Tampered { pk, sequence })
}

/// Puts the personal fields of `inner` (event `sequence` of user `pk`) back in
/// plaintext with the user's key, or, when the key is gone, marks them erased. A payload
/// without sealed fields is left as it is.
pub fn open(
    inner: &mut Map<String, Value>,
    pk: i64,
    sequence: i64,
    key: Option<StoredKey<'_>>,
    erased: Erased,
) -> Result<(), PrivacyError> {
    let Some(sealed) = inner.remove(SEALED) else {
        return Ok(());
    };
    let malformed = |reason: &str| PrivacyError::Malformed {
        pk,
        sequence,
        reason: reason.to_owned(),
    };
    let Value::Object(mut sealed) = sealed else {
        return Err(malformed("not an object"));
    };
    let Some(Value::Array(fields)) = sealed.remove("fields") else {
        return Err(malformed("no field list"));
    };
    let ciphertext = match sealed.remove("c") {
        Some(Value::String(c)) => Some(c),
        Some(Value::Null) | None => None,
        Some(_) => return Err(malformed("ciphertext is not a string")),
    };
    let (Some(ciphertext), Some(key)) = (ciphertext, key) else {
        mark_erased(inner, &fields, erased);
        return Ok(());
    };
    let plaintext = decrypt(&ciphertext, pk, sequence, key)?;
    let personal: Map<String, Value> =
        serde_json::from_slice(&plaintext).map_err(|_| malformed("plaintext is not an object"))?;
    inner.extend(personal);
    Ok(())
}

fn mark_erased(inner: &mut Map<String, Value>, fields: &[Value], erased: Erased) {
    for field in fields.iter().filter_map(Value::as_str) {
        match erased {
            Erased::Null => {
                inner.insert(field.to_owned(), Value::Null);
            }
            Erased::Blank if field == "uid" => {}
            Erased::Blank => {
                inner.insert(field.to_owned(), Value::String(String::new()));
            }
        }
    }
    if erased == Erased::Null {
        inner.insert("erased".to_owned(), Value::Bool(true));
    }
}

/// A published payload (erased fields `null`, `"erased": true`) as typed readers take
/// it: the same object with [`Erased::Blank`] values. None when nothing is erased.
pub fn blank_erased(data: &Value) -> Option<Value> {
    let Value::Object(map) = data else {
        return None;
    };
    if map.get("erased") != Some(&Value::Bool(true)) {
        return None;
    }
    let mut map = map.clone();
    map.remove("erased");
    for field in PERSONAL_FIELDS {
        if map.get(field) == Some(&Value::Null) {
            if field == "uid" {
                map.remove(field);
            } else {
                map.insert(field.to_owned(), Value::String(String::new()));
            }
        }
    }
    Some(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyring() -> Keyring {
        Keyring::new(Kek::parse(&generate()).expect("parses"), Vec::new())
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn keys_parse_only_in_their_format() {
        assert!(Kek::parse(&generate()).is_ok());
        assert!(Kek::parse("v1:AAAA").is_err());
        assert!(Kek::parse("secret").is_err());
        let a = Kek::parse(&generate()).expect("parses");
        let b = Kek::parse(&generate()).expect("parses");
        assert_ne!(a.id(), b.id());
        assert!(!keyring().is_development());
        assert!(Keyring::new(Kek::development(), Vec::new()).is_development());
    }

    #[test]
    fn sealed_fields_open_only_where_they_were_sealed() {
        let ring = keyring();
        let (key, wrapped) = ring.new_data_key(7);
        let kek_id = ring.current().id().to_owned();
        let plain = object(json!({"pk": 7, "username": "jane", "email": "j@x", "is_active": true}));
        let mut inner = plain.clone();
        seal(&mut inner, &key, 7, 1).expect("seals");
        assert!(!has_plaintext(&inner));
        assert!(!serde_json::to_string(&inner).unwrap().contains("jane"));
        install(Some(ring));
        let stored = StoredKey {
            wrapped: &wrapped,
            kek_id: &kek_id,
        };
        let mut opened = inner.clone();
        open(&mut opened, 7, 1, Some(stored), Erased::Null).expect("opens");
        assert_eq!(opened, plain);
        // Moved to another event of the same user, or to another user: refused.
        let mut moved = inner.clone();
        assert_eq!(
            open(&mut moved, 7, 2, Some(stored), Erased::Null),
            Err(PrivacyError::Tampered { pk: 7, sequence: 2 })
        );
        let mut moved = inner.clone();
        assert!(open(&mut moved, 8, 1, Some(stored), Erased::Null).is_err());
        // Without the key: erased, not an error.
        let mut erased = inner.clone();
        open(&mut erased, 7, 1, None, Erased::Null).expect("erased");
        assert_eq!(
            Value::Object(erased.clone()),
            json!({"pk": 7, "username": null, "email": null, "is_active": true, "erased": true})
        );
        assert_eq!(
            blank_erased(&Value::Object(erased)),
            Some(json!({"pk": 7, "username": "", "email": "", "is_active": true}))
        );
        install(None);
    }

    #[test]
    fn a_wrong_key_encryption_key_is_an_error() {
        let ring = keyring();
        let (_, wrapped) = ring.new_data_key(7);
        let other = keyring();
        let id = ring.current().id().to_owned();
        assert!(matches!(
            other.data_key(7, &wrapped, &id),
            Err(PrivacyError::UnknownKek { .. })
        ));
        let rotated = Keyring::new(
            Kek::parse(&generate()).expect("parses"),
            vec![ring.current().clone()],
        );
        let rewrapped = rotated.rewrap(7, &wrapped, &id).expect("rewraps");
        assert!(
            rotated
                .data_key(7, &rewrapped, rotated.current().id())
                .is_ok()
        );
        assert!(matches!(
            rotated.data_key(8, &rewrapped, rotated.current().id()),
            Err(PrivacyError::Unwrap { .. })
        ));
    }

    #[test]
    fn stripping_leaves_erased_fields() {
        let mut inner = object(json!({"pk": 7, "name": "Jane", "uid": "abc", "groups": []}));
        assert!(strip(&mut inner));
        let mut opened = inner.clone();
        open(&mut opened, 7, 1, None, Erased::Blank).expect("opens");
        assert_eq!(
            Value::Object(opened),
            json!({"pk": 7, "name": "", "groups": []})
        );
    }
}
