//! `GET /v1/identity-certificate`: the certificate of the host's key that
//! signs every instance's identity document (see `crate::identity`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::App;

/// The certificate in PEM (`application/x-pem-file`), ready for
/// `openssl smime -verify … -certfile` or `openssl dgst -verify` after
/// `openssl x509 -pubkey`.
///
/// Open to anyone, like `/v1/health`: it is public by nature (EC2
/// publishes its per-Region certificates for anyone to download), and
/// whoever checks a guest's identity document (the guest itself, or the
/// service it presents the document to) needs it without holding the
/// bearer token, which would let them run and terminate instances.
/// Serving it gives away nothing the signatures do not already show.
pub async fn certificate(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        app.supervisor.identity.certificate_pem().to_string(),
    )
}
