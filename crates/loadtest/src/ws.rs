//! The load tool's WebSocket settings.

/// The load tool's WebSocket settings. tungstenite zero-fills its read
/// buffer up to `read_buffer_size` before every read: at the default 128 KiB
/// that memset was 39 % of the load tool's CPU (perf), taken from the servers
/// it shares the cores with. 4 KiB holds every frame of these runs.
pub(crate) fn ws_config() -> Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig> {
    Some(
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096),
    )
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
