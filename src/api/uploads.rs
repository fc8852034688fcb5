//! Images uploaded with a request (OpenAI's edits, the console's playground): checked, named
//! under `uploads/`, stored before the task that refers to them, and removed again when no task
//! was made.

use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::storage::UPLOAD_SCHEME;

/// Largest uploaded image (or mask).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// An uploaded image, checked and named, not stored yet.
pub struct Upload {
    pub key: String,
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes: what identifies the upload in a retry of the same request.
    pub digest: String,
}

impl Upload {
    /// Checks that the bytes are an image; `name` names it in errors and its key.
    pub fn check(batch: &str, name: &str, bytes: Vec<u8>) -> Result<Self, ApiError> {
        let format = crate::media::sniff(&bytes)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is not a PNG, JPEG, WebP or GIF image")))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        Ok(Upload { key: format!("uploads/{batch}/{name}.{}", format.extensions_str()[0]), bytes, digest })
    }

    /// How a task names it among its references.
    pub fn reference(&self) -> String {
        format!("{UPLOAD_SCHEME}{}", self.key)
    }
}

/// Stores the uploads; on failure, removes those already stored.
pub async fn store(state: &AppState, uploads: Vec<Upload>) -> Result<Vec<String>, ApiError> {
    let mut stored = Vec::with_capacity(uploads.len());
    for upload in uploads {
        if let Err(e) = state.storage.put_and_keep(&upload.key, upload.bytes).await {
            discard(state, &stored).await;
            return Err(ApiError::internal(e));
        }
        stored.push(upload.key);
    }
    Ok(stored)
}

/// Removes uploads no task refers to; one left behind goes with the store's lifecycle rule.
pub async fn discard(state: &AppState, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.storage.delete(key).await {
            tracing::warn!(key, error = format!("{e:#}"), "could not remove an upload of a refused edit");
        }
    }
}
