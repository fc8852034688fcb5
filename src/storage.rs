//! Result files: kept in an object store and handed out as Easel's own signed, expiring URLs.

mod recent;

use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetResult, ObjectStore, PutPayload};
use sha2::Sha256;

use crate::db::{Db, now_ms};
use crate::ids::random_hex;

/// References a client uploaded (OpenAI-style edits) are kept in the store and named in the
/// task as `upload:<key>`, so the worker reads them back instead of fetching a URL.
pub const UPLOAD_SCHEME: &str = "upload:";

/// The prefix readiness probes list; nothing is ever written under it.
const READINESS_PREFIX: &str = "readiness-probe";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    #[error("invalid signature")]
    BadSignature,
    #[error("this link has expired")]
    Expired,
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// What this node stored with [`Storage::put_and_keep`] a moment ago.
    recent: Arc<recent::Recent>,
    signing_key: Arc<[u8]>,
    public_url: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

/// The key that signs file links, shared by every node through the database.
async fn signing_key(db: &Db) -> anyhow::Result<Vec<u8>> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ('url_signing_key', $1) ON CONFLICT (key) DO NOTHING")
        .bind(random_hex::<32>())
        .execute(&db.write)
        .await?;
    let hex_key: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'url_signing_key'").fetch_one(&db.write).await?;
    hex::decode(hex_key).context("the stored URL signing key is not hex")
}

fn open_store(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        // Each task's results sit in a folder of their own; once the sweeper deletes the last
        // file, the emptied folders go too, instead of piling up one per task forever.
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?.with_automatic_cleanup(true)));
    }
    if url.starts_with("s3://") {
        return open_s3(url);
    }
    anyhow::bail!("unsupported storage URL {url:?} (use file://PATH or s3://BUCKET/PREFIX)")
}

/// `s3://bucket/prefix`: credentials, region and endpoint come from the usual `AWS_*`
/// variables (see docs/DEPLOYMENT.md). Requests are path-style unless
/// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
fn open_s3(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url).with_context(|| format!("parsing the storage URL {url:?}"))?;
    let bucket =
        parsed.host_str().filter(|b| !b.is_empty()).context("the storage URL names no bucket (s3://BUCKET/PREFIX)")?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // An endpoint the operator wrote as http:// (MinIO, a test server) is meant as such.
    let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).unwrap_or_default();
    if endpoint.starts_with("http://") && std::env::var_os("AWS_ALLOW_HTTP").is_none() {
        builder = builder.with_allow_http(true);
    }
    let s3 = builder.build().context("configuring S3 storage")?;
    let prefix = parsed.path().trim_matches('/');
    if prefix.is_empty() {
        return Ok(Arc::new(s3));
    }
    Ok(Arc::new(PrefixStore::new(s3, ObjectPath::parse(prefix)?)))
}

impl Storage {
    pub async fn open(url: &str, public_url: String, db: &Db) -> anyhow::Result<Self> {
        let (store, recent) = (open_store(url)?, Default::default());
        Ok(Self { store, recent, signing_key: signing_key(db).await?.into(), public_url })
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.put_bytes(key, Bytes::from(bytes)).await
    }

    /// [`Storage::put`], keeping the bytes in memory a little while for a [`Storage::read`]
    /// that is about to follow (a result answered as `b64_json`, an upload its task reads).
    pub async fn put_and_keep(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let bytes = Bytes::from(bytes);
        self.put_bytes(key, bytes.clone()).await?;
        self.recent.keep(key, bytes);
        Ok(())
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.store.put(&ObjectPath::parse(key)?, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<GetResult, object_store::Error> {
        let path = ObjectPath::parse(key).map_err(|e| object_store::Error::InvalidPath { source: e })?;
        self.store.get(&path).await
    }

    /// The whole object, for small files such as uploaded references.
    pub async fn read(&self, key: &str) -> Result<Bytes, object_store::Error> {
        if let Some(bytes) = self.recent.get(key) {
            return Ok(bytes);
        }
        self.get(key).await?.bytes().await
    }

    /// Whether the store answers: one listing of a prefix that holds nothing. (A HEAD would not
    /// do: S3 answers 404 alike for a missing key and a missing bucket.)
    pub async fn check(&self) -> Result<(), object_store::Error> {
        self.store.list_with_delimiter(Some(&ObjectPath::from(READINESS_PREFIX))).await.map(|_| ())
    }

    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.recent.forget(key);
        match self.store.delete(&ObjectPath::parse(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn mac(&self, key: &str, exp_secs: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.signing_key).expect("HMAC takes any key length");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(exp_secs.to_string().as_bytes());
        mac
    }

    fn signature(&self, key: &str, exp_secs: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(key, exp_secs).finalize().into_bytes())
    }

    /// The base of every link to a file (`EASEL_PUBLIC_URL`, or the listener's address).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The public link to `key`, valid until `expires_ms`.
    pub fn signed_url(&self, key: &str, expires_ms: i64) -> String {
        let exp = expires_ms.div_euclid(1000);
        format!("{}/files/{key}?exp={exp}&sig={}", self.public_url, self.signature(key, exp))
    }

    /// Checks a link: the signature first (403), then the expiry (410).
    pub fn verify(&self, key: &str, exp_secs: i64, sig: &str) -> Result<(), LinkError> {
        let given = URL_SAFE_NO_PAD.decode(sig).map_err(|_| LinkError::BadSignature)?;
        self.mac(key, exp_secs).verify_slice(&given).map_err(|_| LinkError::BadSignature)?;
        if exp_secs.saturating_mul(1000) <= now_ms() {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// Signed links to finished tasks' images, each valid for the retention period from the end of
/// its task: what status answers and callbacks carry.
#[derive(Clone)]
pub struct ResultLinks {
    storage: Storage,
    retention_ms: i64,
}

impl ResultLinks {
    pub fn new(storage: Storage, retention_ms: i64) -> Self {
        Self { storage, retention_ms }
    }

    pub fn of(&self, task: &crate::tasks::Task) -> Vec<String> {
        let expires = self.expiry(task);
        task.result_keys.iter().map(|key| self.storage.signed_url(key, expires)).collect()
    }

    /// Links to the images' thumbnails (WebP, at most 256 px a side), in the images' order and
    /// expiring with them. A task with no thumbnail for an image (from before thumbnails, or
    /// one that could not be made) has a link that answers 410, as a deleted file's does.
    pub fn thumbnails(&self, task: &crate::tasks::Task) -> Vec<String> {
        let expires = self.expiry(task);
        let keys = task.result_keys.iter().map(|key| crate::tasks::thumbnail_key(key));
        keys.map(|key| self.storage.signed_url(&key, expires)).collect()
    }

    /// When a task's links expire: the retention period after its end.
    fn expiry(&self, task: &crate::tasks::Task) -> i64 {
        task.completed_at.unwrap_or(task.created_at) + self.retention_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> Storage {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        Storage { store, recent: Default::default(), signing_key: Arc::from(&b"k"[..]), public_url: "http://h".into() }
    }

    fn parts(url: &str) -> (i64, String) {
        let query = url.split_once('?').unwrap().1;
        let (exp, sig) = query.split_once('&').unwrap();
        (exp.trim_start_matches("exp=").parse().unwrap(), sig.trim_start_matches("sig=").to_owned())
    }

    #[test]
    fn storage_urls_name_a_file_path_or_a_bucket() {
        assert!(open_store("s3://easel-results/prod/files").is_ok());
        assert!(open_store("s3://easel-results").is_ok());
        let no_bucket = open_store("s3:///prefix").err().unwrap().to_string();
        assert!(no_bucket.contains("names no bucket"), "{no_bucket}");
        assert!(open_store("gs://bucket").is_err());
    }

    #[test]
    fn signed_links_verify_until_they_expire() {
        let s = storage();
        let (exp, sig) = parts(&s.signed_url("results/a/0.png", now_ms() + 60_000));
        assert_eq!(s.verify("results/a/0.png", exp, &sig), Ok(()));
        assert_eq!(s.verify("results/a/1.png", exp, &sig), Err(LinkError::BadSignature));
        assert_eq!(s.verify("results/a/0.png", exp + 1, &sig), Err(LinkError::BadSignature));
        let (exp, sig) = parts(&s.signed_url("results/a/0.png", now_ms() - 1000));
        assert_eq!(s.verify("results/a/0.png", exp, &sig), Err(LinkError::Expired));
    }
}
