//! Which cameras there are: V4L2 capture nodes on Linux, nokhwa's
//! query of the native backend elsewhere.

use nokhwa::utils::CameraIndex;

#[cfg(not(target_os = "linux"))]
use super::camera_error;
use crate::MediaError;

/// A camera, as [`cameras`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// What to pass to [`CameraSource::open`]: the device path on Linux
    /// (`/dev/video0`), nokhwa's index elsewhere (`0`).
    pub id: String,
    /// For people: "HD Webcam C525".
    pub name: String,
}

/// The cameras there are; an empty list when there are none.
pub fn cameras() -> Result<Vec<CameraInfo>, MediaError> {
    Ok(list()?.into_iter().map(|(info, _)| info).collect())
}

/// The cameras with the index nokhwa opens them by.
#[cfg(target_os = "linux")]
pub(super) fn list() -> Result<Vec<(CameraInfo, CameraIndex)>, MediaError> {
    use v4l::capability::Flags;
    let entries = match std::fs::read_dir("/dev") {
        Ok(entries) => entries,
        Err(e) => return Err(MediaError::Camera(format!("cannot read /dev: {e}"))),
    };
    let mut nodes: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("video")?.parse().ok())
        .collect();
    nodes.sort_unstable();
    let mut out = Vec::new();
    for n in nodes {
        let path = format!("/dev/video{n}");
        // A node we may not open (permissions) or that went away is left
        // out, as is one that does not capture video (a UVC camera's
        // metadata node, an output or M2M device).
        let caps = match v4l::Device::with_path(&path).and_then(|d| d.query_caps()) {
            Ok(caps) => caps,
            Err(e) => {
                tracing::debug!("camera list: {path} skipped: {e}");
                continue;
            }
        };
        if !caps.capabilities.contains(Flags::VIDEO_CAPTURE) {
            continue;
        }
        out.push((
            CameraInfo {
                id: path,
                name: caps.card,
            },
            CameraIndex::Index(n),
        ));
    }
    Ok(out)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn list() -> Result<Vec<(CameraInfo, CameraIndex)>, MediaError> {
    let Some(backend) = nokhwa::native_api_backend() else {
        return Err(MediaError::Camera(format!(
            "cameras are not supported on {}",
            std::env::consts::OS
        )));
    };
    let found = nokhwa::query(backend).map_err(|e| camera_error("listing cameras", e))?;
    Ok(found
        .into_iter()
        .map(|c| {
            let index = c.index().clone();
            (
                CameraInfo {
                    id: index.as_string(),
                    name: c.human_name(),
                },
                index,
            )
        })
        .collect())
}
