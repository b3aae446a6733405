use super::*;

#[test]
fn generation_keys_sort_like_their_numbers() {
    let mut keys: Vec<String> = [10u64, 2, 255, 1 << 40].map(generation_key).into();
    keys.sort();
    assert_eq!(
        keys,
        [2u64, 10, 255, 1 << 40].map(generation_key).to_vec(),
        "listing order is generation order"
    );
    assert_eq!(generation_key(1), ".lease.d/0000000000000001");
}

#[test]
fn this_process_is_alive_and_an_ended_one_is_gone() {
    let me = ProcessStamp::current().expect("proc is mounted");
    assert!(!me.is_gone());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ended = ProcessStamp {
        pid,
        start: u64::MAX,
        ..me.clone()
    };
    assert!(ended.is_gone());
    // Another machine (boot) or PID namespace is never judged from here.
    let elsewhere = ProcessStamp {
        boot_id: "other-boot".into(),
        ..ended.clone()
    };
    assert!(!elsewhere.is_gone());
    let other_ns = ProcessStamp {
        pid_ns: me.pid_ns + 1,
        ..ended
    };
    assert!(!other_ns.is_gone());
}

#[test]
fn records_are_live_until_expiry_or_release() {
    let live = LeaseRecord {
        holder: "a".into(),
        expires: now_secs() + 60,
        released: false,
        nonce: String::new(),
        process: ProcessStamp::current(),
    };
    assert!(live.live());
    assert!(!LeaseRecord {
        released: true,
        ..live.clone()
    }
    .live());
    assert!(!LeaseRecord {
        expires: now_secs() - 1,
        ..live.clone()
    }
    .live());
    // Unreadable records never block anyone.
    assert!(!parse_record(b"garbage").live());
}
