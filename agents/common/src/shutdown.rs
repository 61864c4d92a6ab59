//! How the agents stop: a watch channel that turns true on SIGTERM (systemd stopping the
//! unit) or SIGINT, and a wait on it that keeps callers' futures `Send`.

use tokio::sync::watch;

/// A receiver that becomes true when the process gets SIGTERM or SIGINT. Call inside a tokio
/// runtime.
pub fn on_signals() -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop.send(true);
    });
    stopped
}

/// Resolves when `shutdown` turns true (or its sender is gone). The watch guard is dropped
/// here, so the futures that await this stay `Send`.
pub async fn requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
