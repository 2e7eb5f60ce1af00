//! `GET /api/sessions/{id}/recordings/{seq}`: a command's terminal
//! recording (asciicast v2), for `portcullis replay` and web players.
//!
//! The file is served only when it still matches the size and SHA-256 its
//! command's outcome record keeps (the evidence chain covers that record):
//! a recording edited on disk is refused with 409, not played as if true.

use super::openapi::ErrorBody;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_core::Action;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{authorize, ApiError, ApiState};

/// What a command's record keeps of its recording.
#[derive(serde::Deserialize)]
struct Kept {
    recording: Option<KeptRecording>,
}

#[derive(serde::Deserialize)]
struct KeptRecording {
    file: String,
    bytes: u64,
    sha256: String,
}

/// Serves the recording of command `seq` of session `id`.
#[utoipa::path(get, path = "/api/sessions/{id}/recordings/{seq}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id"), ("seq" = u64, Path, description = "The command's position in the session")),
    responses((status = 200, description = "The terminal recording (asciicast v2), as its record says it was written", content_type = "application/x-asciicast", body = String),
              (status = 404, description = "No such recording", body = ErrorBody),
              (status = 409, description = "The file no longer matches its record", body = ErrorBody),
              (status = 410, description = "Recorded, but the file is gone", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
pub async fn show(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, seq)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, peer, Action::VIEW_SESSIONS).await?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let id = Uuid::parse_str(&id).map_err(|_| bad(format!("{id:?} is not a session id")))?;
    let body = verified(&s, id, seq).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], body).into_response())
}

/// The recording of command `seq` of session `id`, once it matches its
/// record (the API and the console both serve through here).
pub(crate) async fn verified(s: &ApiState, id: Uuid, seq: u64) -> Result<Vec<u8>, ApiError> {
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no recording {seq} in session {id}"),
        )
    };
    let detail = s
        .store
        .session(id)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(missing)?;
    let command = detail
        .commands
        .iter()
        .find(|c| c.seq == seq)
        .ok_or_else(missing)?;
    let kept: Kept = serde_json::from_str(command.detail.as_json()).map_err(|_| missing())?;
    let kept = kept.recording.ok_or_else(missing)?;
    // The name is the gateway's own; a record naming any other file (an
    // edited store) is not followed.
    if kept.file != format!("{id}/{seq}.cast") {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the recording's record names an unexpected file".into(),
        ));
    }
    let path = s.recordings_dir.join(&kept.file);
    let body = tokio::fs::read(&path).await.map_err(|_| {
        ApiError(
            StatusCode::GONE,
            format!("the recording of command {seq} is recorded but its file is gone"),
        )
    })?;
    if body.len() as u64 != kept.bytes || hex::encode(Sha256::digest(&body)) != kept.sha256 {
        tracing::error!(session = %id, seq, file = %path.display(), "a recording does not match its record");
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("the recording of command {seq} does not match its record (size or SHA-256): it was changed after it was written"),
        ));
    }
    Ok(body)
}
