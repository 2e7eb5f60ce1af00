//! `POST /api/ssh/certificate`: a short-lived SSH user certificate for
//! the key the caller holds, carrying the identity its bearer token
//! proves (see `portcullis_proto_ssh::ca`).

use super::openapi::ErrorBody;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{authenticate, ApiError, ApiState};

/// What the API needs to issue certificates.
#[derive(Clone)]
pub struct SshIssuer {
    /// The user CA.
    pub ca: Arc<portcullis_proto_ssh::ca::UserCa>,
    /// The SSH listener's port, for clients.
    pub port: u16,
    /// The longest a certificate lives.
    pub lifetime_secs: i64,
}

/// The request body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct CertificateRequest {
    /// The key to certify, as an `authorized_keys` line.
    public_key: String,
}

/// Issues a certificate for the caller's key.
#[utoipa::path(post, path = "/api/ssh/certificate", tag = "identity", security(("bearer" = [])),
    request_body = CertificateRequest,
    responses((status = 200, description = "An OpenSSH user certificate for the key, signed by the gateway's CA, valid no longer than the token", body = serde_json::Value),
              (status = 400, description = "Not an acceptable public key", body = ErrorBody),
              (status = 404, description = "The gateway does not serve SSH", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn certificate(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<CertificateRequest>,
) -> Result<Response, ApiError> {
    let Some(issuer) = s.ssh.clone() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this gateway does not serve SSH".into(),
        ));
    };
    let identity = authenticate(&s, &headers).await?;
    let now = portcullis_core::identity::now_secs();
    let cert = issuer
        .ca
        .issue(&identity, &body.public_key, now, issuer.lifetime_secs)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let line = cert
        .to_openssh()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let note = json!({
        "user": identity.user,
        "actor": identity.actor,
        "serial": cert.serial(),
        "valid_before": cert.valid_before(),
        "key": cert.public_key().fingerprint(Default::default()).to_string(),
    });
    let recorded = s
        .core
        .recorder
        .record(portcullis_core::AuditEvent::note(
            "ssh_certificate_issued",
            note,
        ))
        .await;
    if recorded.is_err() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit store is unavailable; no certificate is issued unrecorded".into(),
        ));
    }
    Ok(Json(json!({
        "certificate": line,
        "valid_before": cert.valid_before(),
        "ssh_port": issuer.port,
    }))
    .into_response())
}
