//! What the first bytes of a VP8 frame say (RFC 6386 §9.1), read without
//! libvpx: whether it is a keyframe, and the picture size it announces.

/// True if `data` is a VP8 keyframe: bit 0 of the frame tag's first byte
/// is 0 (RFC 6386 §9.1), and the keyframe start code follows (§9.1: bytes
/// 3..6 are 9d 01 2a).
pub(crate) fn is_keyframe(data: &[u8]) -> bool {
    data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
}

/// The picture size a keyframe announces (RFC 6386 §9.1: 14-bit width and
/// height after the start code; the top two bits are scaling), read before
/// decoding so that a peer cannot make us allocate for a huge picture.
pub(crate) fn keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    if !is_keyframe(data) {
        return None;
    }
    let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
    let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
    Some((u32::from(w), u32::from(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_keyframe_reads_the_frame_tag() {
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0; 5]));
        assert!(is_keyframe(&[
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00
        ]));
        assert!(!is_keyframe(&[
            0x11, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00
        ]));
    }
}
