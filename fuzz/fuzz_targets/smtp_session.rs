//! Feeds arbitrary client input, in arbitrary chunks, to a real SMTP session: the
//! command parser, the SASL exchange, the DATA and BDAT readers, the limits. The
//! database is unreachable, so every path that needs it takes its failure branch
//! (454 / 451) — which must never panic, hang or lose the session's framing either.
#![no_main]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use libfuzzer_sys::fuzz_target;
use mailbridge_core::{
    Settings,
    tls::{Identity, ServedCertificate},
};
use mailbridge_edge::{EdgeContext, ListenerKind, Session, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One runtime for every input: the context's background tasks (the group commit's
/// committers) and the pool's connections live in it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Built inside `runtime()` (the group commit spawns its committers there).
fn context() -> Arc<EdgeContext> {
    static CONTEXT: std::sync::OnceLock<Arc<EdgeContext>> = std::sync::OnceLock::new();
    CONTEXT
        .get_or_init(|| {
            mailbridge_core::tls::install_crypto_provider();
            let mut settings = Settings::from_lookup(|_| None).expect("defaults");
            settings.edge.hostname = "fuzz.mailbridge.test".into();
            settings.edge.plaintext_auth_networks = "192.0.2.0/24".parse().expect("networks");
            settings.edge.limits.max_message_size = 64 * 1024;
            settings.edge.limits.idle_timeout = Duration::from_millis(200);
            settings.edge.auth_throttle.failure_delay = Duration::ZERO;
            // Nothing listens there: every database call fails at once.
            let url = secrecy::SecretString::from("postgres://fuzz:fuzz@127.0.0.1:9/fuzz".to_owned());
            let pool = sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(Duration::from_millis(50))
                .connect_lazy_with(mailbridge_core::db::connect_options(&url).expect("url"));
            let identity = Identity::self_signed(&["fuzz.mailbridge.test".to_owned()]).expect("certificate");
            let certificate = Arc::new(ServedCertificate::fixed(identity).expect("TLS"));
            let key = mailbridge_core::crypto::MasterKey::from_base64(
                &mailbridge_core::crypto::MasterKey::generate_base64(),
            )
            .expect("a generated key");
            Arc::new(EdgeContext::new(&settings.edge, pool, certificate, key))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let input = data.to_vec();
    runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(16 * 1024);
        let (mut replies, mut requests) = tokio::io::split(client);
        let peer: SocketAddr = "192.0.2.7:40000".parse().expect("address");
        let context = context();
        let mut session = Session::new(ListenerKind::Relay, server, context, peer, None, Shutdown::default());
        let serving = tokio::spawn(async move { session.run().await });
        let draining = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = replies.read_to_end(&mut sink).await;
        });
        // The first byte picks the chunk size, so pipelining boundaries vary too.
        let chunk = usize::from(input.first().copied().unwrap_or(1)).max(1);
        for part in input.get(1..).unwrap_or_default().chunks(chunk) {
            if requests.write_all(part).await.is_err() {
                break;
            }
        }
        let _ = requests.shutdown().await;
        let result = tokio::time::timeout(Duration::from_secs(10), serving).await;
        assert!(result.is_ok(), "the session must end when its client does");
        let _ = draining.await;
    });
});
