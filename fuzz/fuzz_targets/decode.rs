//! The protocol decoder on arbitrary frames: it must never panic, and
//! whatever it accepts must encode and decode back to the same message.
#![no_main]

use callinvite_protocol::wire::{decode_client, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = decode_client(text) {
        let again = decode_client(&encode(&msg)).expect("an accepted message re-decodes");
        assert_eq!(again, msg);
    }
});
