use callinvite_client::media::MediaError;
use callinvite_client::Event;

use super::*;
use crate::calls::tests::{iid, local, media_of, outgoing, signed_in};
use crate::calls::Phase;

#[test]
fn media_status_shows_failures_warnings_mute_and_quality() {
    let mut c = signed_in();
    assert!(!c.set_muted(true), "nothing to mute without a call");
    outgoing(&mut c, "i1", true);
    c.on_event(
        &Event::LocalInvitationAccepted {
            invitation: local(Some("i1"), "bob"),
            response: String::new(),
        },
        &Settings::default(),
        2_000,
    );
    assert!(c.set_muted(true));
    assert!(media_of(&c).muted);
    c.on_media(
        &iid("i1"),
        MediaUpdate::Warning("No microphone (none found): they cannot hear you.".into()),
    );
    c.on_media(&iid("i1"), MediaUpdate::Connected);
    let m = media_of(&c);
    assert_eq!(m.phase, MediaPhase::Connected);
    assert!(
        m.message.as_deref().unwrap().contains("No microphone"),
        "a warning stays while connected"
    );
    let stats = |rtt, loss, jitter| MediaUpdate::Stats {
        rtt_ms: Some(rtt),
        loss,
        jitter_ms: jitter,
        mic_level: 0.2,
        speaker_level: 0.3,
        relayed: false,
        video: None,
    };
    c.on_media(&iid("i1"), stats(20.0, 0.0, 3.0));
    assert_eq!(
        (media_of(&c).quality, media_of(&c).speaker_level),
        ("good", 0.3)
    );
    c.on_media(&iid("i1"), stats(20.0, 0.05, 3.0));
    assert_eq!(media_of(&c).quality, "fair");
    c.on_media(&iid("i1"), stats(600.0, 0.0, 3.0));
    assert_eq!(media_of(&c).quality, "poor");
    c.on_media(
        &iid("i1"),
        MediaUpdate::Failed("No audio: could not connect to them within 10 s.".into()),
    );
    let m = media_of(&c);
    assert_eq!((m.phase, m.mic_level), (MediaPhase::Failed, 0.0));
    assert!(
        !c.on_media(&iid("i1"), stats(20.0, 0.0, 3.0)),
        "no figures on a failed line"
    );
    // The call itself goes on: only a hang-up ends it.
    assert_eq!(c.call.as_ref().unwrap().phase, Phase::InCall);
}

/// An outgoing call to bob, accepted, with media (`settings` at accept).
fn in_call_with_media(settings: &Settings) -> Calls {
    let mut c = signed_in();
    outgoing(&mut c, "i1", true);
    c.on_event(
        &Event::LocalInvitationAccepted {
            invitation: local(Some("i1"), "bob"),
            response: String::new(),
        },
        settings,
        2_000,
    );
    c
}

fn devices(cameras: &[&str], selected: usize, screen: bool) -> MediaUpdate {
    MediaUpdate::VideoDevices {
        cameras: cameras.iter().map(|c| c.to_string()).collect(),
        selected,
        can_share_screen: screen,
    }
}

fn source_ok(c: &mut Calls) {
    let wanted = c.video_wanted(&iid("i1")).unwrap();
    assert!(c.on_media(
        &iid("i1"),
        MediaUpdate::VideoSource {
            wanted,
            result: Ok(())
        }
    ));
}

#[test]
fn the_camera_starts_once_listed_and_turns_off_and_on() {
    let mut c = in_call_with_media(&Settings::default());
    let v = media_of(&c).video;
    assert!(v.camera_on, "calls start with the camera on by default");
    assert!(!v.sending && v.cameras.is_none());
    assert_eq!(
        c.video_wanted(&iid("i1")),
        Some(VideoWanted::Off),
        "nothing to open before the cameras are listed"
    );
    assert_eq!(c.video_wanted(&iid("other")), None);
    c.on_media(&iid("i1"), devices(&["Front", "Back"], 1, false));
    assert_eq!(
        c.video_wanted(&iid("i1")),
        Some(VideoWanted::Camera(1)),
        "Settings' camera"
    );
    source_ok(&mut c);
    let v = media_of(&c).video;
    assert!(v.sending && v.message.is_none());

    // Off: nothing is wanted, so the camera is dropped.
    assert!(c.set_camera(false));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Off));
    source_ok(&mut c);
    let v = media_of(&c).video;
    assert!(!v.camera_on && !v.sending);
    // And on again: the same camera.
    assert!(c.set_camera(true));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Camera(1)));
    source_ok(&mut c);
    assert!(media_of(&c).video.sending);
}

#[test]
fn settings_can_start_calls_with_the_camera_off() {
    let settings = Settings {
        start_camera_on: false,
        ..Settings::default()
    };
    let mut c = in_call_with_media(&settings);
    c.on_media(&iid("i1"), devices(&["Webcam"], 0, false));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Off));
    assert!(!media_of(&c).video.camera_on);
}

#[test]
fn no_camera_is_said_and_the_call_goes_on() {
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&[], 0, false));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Off));
    source_ok(&mut c);
    let v = media_of(&c).video;
    assert_eq!(v.message.as_deref(), Some(NO_CAMERA));
    assert!(!v.sending);
    assert!(!c.switch_camera(), "nothing to switch to");
    // A Settings camera that is gone: the first one is used.
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&["Webcam"], 7, false));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Camera(0)));
}

#[test]
fn a_camera_that_fails_to_open_is_explained_until_turned_off() {
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&["Webcam"], 0, false));
    c.on_media(
        &iid("i1"),
        MediaUpdate::VideoSource {
            wanted: VideoWanted::Camera(0),
            result: Err(VideoSourceError::Camera(MediaError::Camera("busy".into()))),
        },
    );
    let v = media_of(&c).video;
    assert!(v.camera_on && !v.sending);
    assert_eq!(
        v.message.as_deref(),
        Some(
            "Camera: camera: busy. They cannot see you; close other apps that use the camera, \
             or choose another in Settings."
        )
    );
    c.set_camera(false);
    assert_eq!(media_of(&c).video.message, None);
}

#[test]
fn switching_goes_round_the_cameras_and_keeps_the_camera_on() {
    let mut c = in_call_with_media(&Settings::default());
    assert!(!c.switch_camera(), "not before they are listed");
    c.on_media(&iid("i1"), devices(&["Front", "Back", "USB"], 0, false));
    source_ok(&mut c);
    assert!(c.switch_camera());
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Camera(1)));
    source_ok(&mut c);
    assert!(c.switch_camera());
    assert!(c.switch_camera());
    assert_eq!(
        c.video_wanted(&iid("i1")),
        Some(VideoWanted::Camera(0)),
        "round"
    );
    let v = media_of(&c).video;
    assert!(v.camera_on && v.camera == 0);
    // Switching while off picks the camera for when it is turned on.
    c.set_camera(false);
    c.switch_camera();
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Off));
    c.set_camera(true);
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Camera(1)));
}

#[test]
fn a_source_overtaken_by_a_newer_choice_changes_nothing() {
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&["Webcam"], 0, false));
    c.set_camera(false);
    // The camera opened for the earlier "on" reports after the user turned it off.
    assert!(!c.on_media(
        &iid("i1"),
        MediaUpdate::VideoSource {
            wanted: VideoWanted::Camera(0),
            result: Ok(())
        }
    ));
    assert!(!media_of(&c).video.sending);
}

#[test]
fn the_screen_replaces_the_camera_while_shared() {
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&["Webcam"], 0, false));
    assert!(!c.set_sharing_screen(true), "not where it cannot be shared");
    let mut c = in_call_with_media(&Settings::default());
    c.on_media(&iid("i1"), devices(&["Webcam"], 0, true));
    source_ok(&mut c);
    assert!(c.set_sharing_screen(true));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Screen));
    source_ok(&mut c);
    assert!(media_of(&c).video.sharing_screen && media_of(&c).video.sending);
    // Stopped: the camera again.
    assert!(c.set_sharing_screen(false));
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Camera(0)));
    // Shared with the camera off, and stopped: nothing.
    c.set_camera(false);
    c.set_sharing_screen(true);
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Screen));
    c.set_sharing_screen(false);
    assert_eq!(c.video_wanted(&iid("i1")), Some(VideoWanted::Off));
    // A screen that cannot be captured ends the sharing, with a message.
    c.set_camera(true);
    c.set_sharing_screen(true);
    c.on_media(
        &iid("i1"),
        MediaUpdate::VideoSource {
            wanted: VideoWanted::Screen,
            result: Err(VideoSourceError::Screen(MediaError::ScreenCapture(
                "no display".into(),
            ))),
        },
    );
    let v = media_of(&c).video;
    assert!(!v.sharing_screen && !v.sending);
    assert_eq!(
        v.message.as_deref(),
        Some(
            "Screen sharing: screen capture: no display. \
             Sharing stopped (your camera is sent again if it is on)."
        )
    );
    assert_eq!(
        c.video_wanted(&iid("i1")),
        Some(VideoWanted::Camera(0)),
        "back to the camera"
    );
    source_ok(&mut c);
    assert_eq!(media_of(&c).video.message, None);
}

#[test]
fn their_video_starts_and_stops_and_a_failed_line_has_none() {
    let mut c = in_call_with_media(&Settings::default());
    assert!(!media_of(&c).video.remote, "not before their first picture");
    assert!(c.on_media(&iid("i1"), MediaUpdate::RemoteVideo(true)));
    assert!(media_of(&c).video.remote);
    let flow = |w, h, fps| VideoFlow {
        width: w,
        height: h,
        fps,
    };
    let stats = |received, sent| MediaUpdate::Stats {
        rtt_ms: Some(20.0),
        loss: 0.0,
        jitter_ms: 1.0,
        mic_level: 0.1,
        speaker_level: 0.1,
        relayed: false,
        video: Some((received, sent)),
    };
    c.on_media(
        &iid("i1"),
        stats(Some(flow(640, 480, 30.0)), Some(flow(320, 240, 29.0))),
    );
    let v = media_of(&c).video;
    assert_eq!(v.received, Some(flow(640, 480, 30.0)));
    assert_eq!(v.sent, None, "our camera is not sending yet");
    assert!(c.on_media(&iid("i1"), MediaUpdate::RemoteVideo(false)));
    let v = media_of(&c).video;
    assert!(!v.remote && v.received.is_none(), "their camera went off");
    assert!(!c.on_media(&iid("other"), MediaUpdate::RemoteVideo(true)));
    c.on_media(&iid("i1"), MediaUpdate::RemoteVideo(true));
    c.on_media(&iid("i1"), MediaUpdate::Failed("No audio: no path.".into()));
    let v = media_of(&c).video;
    assert!(
        !v.remote && !v.sending,
        "a failed line carries no picture either way"
    );
    assert!(
        c.set_camera(false),
        "the camera can still be turned off: the call goes on"
    );
    // Without a call there is nothing to switch.
    let mut none = signed_in();
    assert!(!none.set_camera(false));
    assert!(!none.switch_camera());
    assert!(!none.set_sharing_screen(false));
}
