//! The server's invitation state machine on arbitrary event sequences: it must
//! never panic, must end (no ringing forever once time has passed), and must
//! tell the caller at most one outcome.
#![no_main]

use std::time::{Duration, Instant};

use callinvite_protocol::invitation::{GoneCause, Input, Party, Record, Timeouts};
use callinvite_protocol::wire::AckOf;
use callinvite_protocol::{DeviceId, InvitationId, ServerMessage, UserId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let user = |s: &str| UserId::parse(s).expect("valid");
    let caller = Party { user: user("alice"), device: DeviceId(1) };
    let devices = [DeviceId(11), DeviceId(12), DeviceId(13)];
    let t0 = Instant::now();
    let mut now = t0;
    let online: Vec<DeviceId> = devices.iter().copied().filter(|d| data.first().is_some_and(|b| b & (1 << (d.0 - 11)) != 0)).collect();
    let (mut record, mut fx) = Record::new(InvitationId("i".into()), caller.clone(), 0, user("bob"), String::new(), &online, Timeouts::default(), now);
    for (n, pair) in data.get(1..).unwrap_or(&[]).chunks(2).enumerate() {
        let (op, arg) = (pair[0], *pair.get(1).unwrap_or(&0));
        let d = devices[(arg % 3) as usize];
        let bob = Party { user: user("bob"), device: d };
        let req = n as u64 + 1;
        let input = match op % 11 {
            0 => Input::CalleeDeviceOnline(d),
            1 => Input::Ack { from: d, of: AckOf::Invitation },
            2 => Input::Ack { from: d, of: AckOf::Canceled },
            3 => Input::Accept { from: bob, req, response: String::new() },
            4 => Input::Refuse { from: bob, req, response: String::new(), busy: arg & 1 == 1 },
            5 => Input::Cancel { from: caller.clone(), req },
            6 => Input::Hangup { from: if arg & 1 == 1 { caller.clone() } else { bob }, req },
            7 => Input::DeviceGone { device: if arg & 4 == 4 { DeviceId(1) } else { d }, cause: GoneCause::ConnectionLost },
            8 => Input::Shutdown,
            _ => {
                now += Duration::from_millis(u64::from(arg) * 500);
                Input::Tick
            }
        };
        fx.extend(record.handle(input, now));
    }
    now += Duration::from_secs(3600);
    fx.extend(record.handle(Input::Tick, now));
    assert!(!record.is_ringing(), "still ringing an hour later");
    let outcomes = fx
        .iter()
        .filter(|e| e.to == DeviceId(1))
        .filter(|e| matches!(e.msg, ServerMessage::Accepted { .. } | ServerMessage::Refused { .. } | ServerMessage::Canceled { .. } | ServerMessage::Failed { .. }))
        .count();
    assert!(outcomes <= 1, "the caller was told {outcomes} outcomes");
});
