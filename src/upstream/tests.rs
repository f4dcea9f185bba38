//! Group-level behaviour against nginx's round-robin module: failover, passive health,
//! backups, `max_conns`, the lone-peer rule, and state kept across reloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::model::{BalanceMethod, PeerSpec, QueueSpec};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Peer `i` is `127.0.0.1:(i + 1)`, shown as the letter `a + i`; nginx's defaults otherwise
/// (`max_fails=1 fail_timeout=10s`).
pub(crate) fn peer_spec(i: usize, weight: u32) -> PeerSpec {
    PeerSpec {
        weight,
        ..PeerSpec::new(addr(i), format!("127.0.0.1:{}", i + 1))
    }
}

fn addr(i: usize) -> SocketAddr {
    ([127, 0, 0, 1], i as u16 + 1).into()
}

fn upstream(name: &str, peers: Vec<PeerSpec>) -> Upstream {
    upstream_with(name, peers, BalanceMethod::RoundRobin)
}

fn upstream_with(name: &str, peers: Vec<PeerSpec>, method: BalanceMethod) -> Upstream {
    Upstream {
        name: name.to_owned(),
        peers,
        method,
        keepalive: 0,
        keepalive_timeout: 60 * SEC,
        keepalive_requests: 1000,
        keepalive_time: 3600 * SEC,
        queue: None,
        implicit: false,
        location: "test.conf:1:1".to_owned(),
        resolve: None,
        zone: false,
        state: None,
    }
}

/// A group named "app" with peers `a`, `b`… of these weights, edited by `edit`.
fn group(weights: &[u32], edit: impl Fn(usize, &mut PeerSpec)) -> UpstreamGroup {
    group_in(&PeerRegistry::new(), "app", weights, edit)
}

fn group_in(
    registry: &PeerRegistry,
    name: &str,
    weights: &[u32],
    edit: impl Fn(usize, &mut PeerSpec),
) -> UpstreamGroup {
    let specs = weights.iter().enumerate().map(|(i, &weight)| {
        let mut spec = peer_spec(i, weight);
        edit(i, &mut spec);
        spec
    });
    UpstreamGroup::new(&upstream(name, specs.collect()), registry)
}

fn letter(guard: &PeerGuard) -> char {
    (b'a' + guard.addr().port() as u8 - 1) as char
}

fn state(group: &UpstreamGroup, letter: char) -> &PeerState {
    let addr = addr((letter as u8 - b'a') as usize);
    let peer = group.peers().iter().find(|p| p.addr() == addr);
    peer.expect("no such peer").state()
}

/// One new request at `now` that succeeds; the letter it went to, or `-` for no live peer.
fn request(group: &UpstreamGroup, now: Instant) -> char {
    match group.pick(&mut Tried::new(), now) {
        Ok(mut guard) => {
            let letter = letter(&guard);
            guard.success();
            letter
        }
        Err(NoLivePeer) => '-',
    }
}

fn requests(group: &UpstreamGroup, now: Instant, n: usize) -> String {
    (0..n).map(|_| request(group, now)).collect()
}

#[test]
fn group_follows_smooth_weighted_round_robin() {
    let cases: [(&[u32], &str); 4] = [
        (&[5, 1, 1], "aabacaa"),
        (&[3, 2], "ababa"),
        (&[1, 1, 1], "abcabc"),
        (&[4, 3, 2], "abcabacba"),
    ];
    for (weights, want) in cases {
        let group = group(weights, |_, _| {});
        let got = requests(&group, Instant::now(), want.len());
        assert_eq!(got, want, "weights {weights:?}");
    }
}

#[test]
fn a_down_peer_is_never_picked_nor_counted_in_tries() {
    let group = group(&[2, 5, 1], |i, spec| spec.down = i == 1);
    assert_eq!(requests(&group, Instant::now(), 6), "acaaca");
    assert_eq!((group.len(), group.tries()), (3, 2));
}

#[test]
fn failover_skips_peers_the_request_already_tried() {
    let group = group(&[1, 1, 1], |_, _| {});
    let t0 = Instant::now();
    let mut tried = Tried::new();

    let mut first = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&first), 'a');
    first.failure(t0);
    let mut second = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&second), 'b');
    second.failure(t0);
    let mut third = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&third), 'c');
    assert_eq!(tried.count(), 3);
    third.failure(t0);
    assert_eq!(group.pick(&mut tried, t0).unwrap_err(), NoLivePeer);
}

#[test]
fn with_max_fails_zero_only_tried_keeps_a_peer_out() {
    // max_fails=0: failures never take a peer out, only `tried` does.
    let group = group(&[1, 1], |_, spec| spec.max_fails = 0);
    let t0 = Instant::now();
    let mut tried = Tried::new();
    let mut a = group.pick(&mut tried, t0).unwrap();
    a.failure(t0);
    let mut b = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&b), 'b');
    b.failure(t0);
    assert!(group.pick(&mut tried, t0).is_err());
    // Currents [-1, 1] after that request: [0, 2] -> b, [1, 1] -> a, ...
    assert_eq!(requests(&group, t0, 4), "baba");
}

#[test]
fn max_fails_takes_a_peer_out_for_fail_timeout_then_one_trial_brings_it_back() {
    // a: max_fails=2 fail_timeout=10s; b: defaults. Weights 1, 1.
    let group = group(&[1, 1], |i, spec| {
        if i == 0 {
            spec.max_fails = 2;
        }
    });
    let t0 = Instant::now();

    let mut a = group.pick(&mut Tried::new(), t0).unwrap(); // [-1, 1]
    assert_eq!(letter(&a), 'a');
    a.failure(t0); // fails 1 of 2: still in
    assert_eq!(request(&group, t0), 'b'); // [0, 0]
    let mut a = group.pick(&mut Tried::new(), t0 + SEC).unwrap(); // [-1, 1]
    assert_eq!(letter(&a), 'a');
    a.failure(t0 + SEC); // fails 2 of 2: out until t0+11s inclusive
    assert_eq!(state(&group, 'a').fails(), 2);

    // b alone gains and gives back its own weight: currents stay [-1, 1].
    assert_eq!(requests(&group, t0 + 2 * SEC, 3), "bbb");
    assert_eq!(requests(&group, t0 + 11 * SEC, 3), "bbb");

    let t1 = t0 + 11 * SEC + MS;
    assert_eq!(request(&group, t1), 'b'); // a eligible again: [0, 2] -> b
    let mut trial = group.pick(&mut Tried::new(), t1).unwrap(); // [1, 1] -> a, new window
    assert_eq!(letter(&trial), 'a');
    assert_eq!(requests(&group, t1, 2), "bb"); // a out while its trial is in flight
    trial.success(); // chosen after a quiet fail_timeout: forgiven
    assert_eq!(state(&group, 'a').fails(), 0);
    assert_eq!(requests(&group, t1, 4), "baba");
}

#[test]
fn when_every_peer_failed_pick_fails_and_failure_counts_are_kept() {
    // nginx 1.11.5 removed the "mark them as live for quick recovery" reset.
    let group = group(&[1, 1], |_, _| {});
    let t0 = Instant::now();
    let mut tried = Tried::new();
    group.pick(&mut tried, t0).unwrap().failure(t0);
    group.pick(&mut tried, t0).unwrap().failure(t0);

    assert_eq!(group.pick(&mut tried, t0).unwrap_err(), NoLivePeer);
    assert_eq!(request(&group, t0 + 5 * SEC), '-');
    assert_eq!(request(&group, t0 + 10 * SEC), '-');
    assert_eq!(
        (state(&group, 'a').fails(), state(&group, 'b').fails()),
        (1, 1)
    );
    // Currents were left at [-1, 1], and each failure took 1/1 of the weight off. Effective
    // weights 0, 0: [-1, 1] -> b (gives back 0); then 1, 1: [0, 2] -> b, [1, 1] -> a, [0, 2] -> b.
    assert_eq!(requests(&group, t0 + 10 * SEC + MS, 4), "bbab");
}

#[test]
fn a_lone_peer_ignores_failures() {
    let group = group(&[1], |_, _| {});
    let t0 = Instant::now();
    for n in 0..5 {
        let mut guard = group
            .pick(&mut Tried::new(), t0)
            .expect("lone peer always picked");
        guard.failure(t0);
        assert_eq!(state(&group, 'a').fails(), 0, "after failure {n}");
    }
    assert_eq!(group.tries(), 1);
    let mut tried = Tried::new();
    group.pick(&mut tried, t0).unwrap().failure(t0);
    assert!(group.pick(&mut tried, t0).is_err(), "one try per request");
}

#[test]
fn a_lone_peer_still_obeys_down_and_max_conns() {
    let t0 = Instant::now();
    let down = group(&[1], |_, spec| spec.down = true);
    assert_eq!(request(&down, t0), '-');
    assert_eq!(down.tries(), 0);

    let limited = group(&[1], |_, spec| spec.max_conns = 1);
    let held = limited.pick(&mut Tried::new(), t0).unwrap();
    assert_eq!(request(&limited, t0), '-');
    drop(held);
    assert_eq!(request(&limited, t0), 'a');
}

#[test]
fn one_primary_with_a_backup_is_not_a_lone_peer() {
    let group = group(&[1, 1], |i, spec| spec.backup = i == 1);
    let t0 = Instant::now();
    assert_eq!(requests(&group, t0, 3), "aaa");
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    assert_eq!(state(&group, 'a').fails(), 1);
    assert_eq!(requests(&group, t0 + SEC, 3), "bbb");
}

#[test]
fn backups_serve_only_when_no_primary_is_eligible() {
    // a, b primaries; c, d backups (weights 1).
    let group = group(&[1, 1, 1, 1], |i, spec| spec.backup = i >= 2);
    let t0 = Instant::now();
    assert_eq!(requests(&group, t0, 6), "ababab");
    assert_eq!(group.tries(), 4);

    // One request that fails on both primaries moves to the backups.
    let mut tried = Tried::new();
    let steps = ['a', 'b', 'c', 'd'];
    for want in steps {
        let mut guard = group.pick(&mut tried, t0).unwrap();
        assert_eq!(letter(&guard), want);
        guard.failure(t0);
    }
    assert!(tried.on_backups());
    assert!(group.pick(&mut tried, t0).is_err());

    // Everything failed: nothing until the windows run out.
    assert_eq!(request(&group, t0 + SEC), '-');
    // Primaries at [-1, 1] with effective weights 0, 0: [-1, 1] -> b, then [0, 2] -> b.
    assert_eq!(requests(&group, t0 + 10 * SEC + MS, 2), "bb");
}

#[test]
fn backups_take_over_while_primaries_are_failed() {
    let group = group(&[1, 1, 2, 1], |i, spec| spec.backup = i >= 2);
    let t0 = Instant::now();
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    // Backups c=2, d=1 balance among themselves with their own weights.
    assert_eq!(requests(&group, t0 + SEC, 6), "cdccdc");
}

#[test]
fn a_request_that_moved_to_backups_stays_there() {
    // a (max_conns=1) primary; b, c backups. nginx switches the request's peer list.
    let group = group(&[1, 1, 1], |i, spec| {
        spec.max_conns = u32::from(i == 0);
        spec.backup = i >= 1;
    });
    let t0 = Instant::now();
    let other = group.pick(&mut Tried::new(), t0).unwrap();
    let mut tried = Tried::new();
    let mut first = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&first), 'b');
    drop(other); // a has room again, but this request is on the backups now
    first.failure(t0);
    let second = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&second), 'c');
}

#[test]
fn without_backups_a_request_keeps_considering_primaries() {
    let group = group(&[1, 1], |i, spec| spec.max_conns = u32::from(i == 0));
    let t0 = Instant::now();
    let other = group.pick(&mut Tried::new(), t0).unwrap(); // a, now full
    let mut tried = Tried::new();
    let mut b = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&b), 'b');
    b.failure(t0);
    assert!(group.pick(&mut tried, t0).is_err()); // a full, b tried
    drop(other);
    let a = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&a), 'a');
}

#[test]
fn max_conns_counts_attempts_in_flight() {
    // a: max_conns=1; weights 1, 1.
    let group = group(&[1, 1], |i, spec| spec.max_conns = u32::from(i == 0));
    let t0 = Instant::now();
    let mut held = group.pick(&mut Tried::new(), t0).unwrap(); // [-1, 1]
    assert_eq!(letter(&held), 'a');
    assert_eq!(state(&group, 'a').in_flight(), 1);
    assert_eq!(requests(&group, t0, 2), "bb"); // b alone: currents stay [-1, 1]
    held.success();
    assert_eq!(
        state(&group, 'a').in_flight(),
        1,
        "reported, still in flight until dropped"
    );
    drop(held);
    assert_eq!(state(&group, 'a').in_flight(), 0);
    assert_eq!(requests(&group, t0, 3), "bab"); // [0, 2] -> b, [1, 1] -> a, [0, 2] -> b
}

#[test]
fn every_outcome_ends_the_attempt_once() {
    let group = group(&[1], |_, _| {});
    let t0 = Instant::now();
    let in_flight = || state(&group, 'a').in_flight();
    let guards: Vec<_> = (0..4)
        .map(|_| group.pick(&mut Tried::new(), t0).unwrap())
        .collect();
    assert_eq!(in_flight(), 4);
    let mut guards = guards.into_iter();
    guards.next().unwrap().success();
    assert_eq!(in_flight(), 3);
    guards.next().unwrap().failure(t0);
    assert_eq!(in_flight(), 2);
    guards.next().unwrap().neutral();
    assert_eq!(in_flight(), 1);
    drop(guards);
    assert_eq!(in_flight(), 0);
}

#[test]
fn neutral_leaves_failure_counts_alone() {
    let group = group(&[1, 1], |_, spec| spec.max_fails = 3);
    let t0 = Instant::now();
    let mut a = group.pick(&mut Tried::new(), t0).unwrap();
    a.failure(t0);
    group.pick(&mut Tried::new(), t0).unwrap().neutral(); // b
    let a = group.pick(&mut Tried::new(), t0 + 11 * SEC).unwrap(); // new window for a
    assert_eq!(letter(&a), 'a');
    a.neutral();
    assert_eq!(state(&group, 'a').fails(), 1);
}

#[test]
fn effective_weight_recovers_one_step_per_pick_after_a_failure() {
    // a: weight 4, max_fails=1 (a failure takes 4/1 off: effective 0). b: weight 1, never out.
    let group = group(&[4, 1], |i, spec| spec.max_fails = u32::from(i == 0));
    let t0 = Instant::now();
    let mut a = group.pick(&mut Tried::new(), t0).unwrap(); // [4, 1] -> a -> [-1, 1]
    a.failure(t0);
    assert_eq!(requests(&group, t0 + 5 * SEC, 2), "bb");
    // Back at currents [-1, 1], a's effective weight climbing 0, 1, 2, 3, 4 (derived by hand):
    // [-1,2]b [0,2]b [2,1]a [2,2]a [2,3]b [6,-1]a [5,0]a [4,1]a [3,2]a [2,3]b
    assert_eq!(requests(&group, t0 + 11 * SEC, 10), "bbaabaaaab");
    // Without the failure, weights 4, 1 would give "aabaa" from [0, 0].
    assert_eq!(requests(&self::group(&[4, 1], |_, _| {}), t0, 5), "aabaa");
}

#[test]
fn a_reload_keeps_the_state_of_kept_peers_and_starts_new_ones_fresh() {
    let registry = PeerRegistry::new();
    let t0 = Instant::now();
    let old = group_in(&registry, "app", &[1, 1], |_, _| {});
    old.pick(&mut Tried::new(), t0).unwrap().failure(t0); // a out
    let mut held_b = old.pick(&mut Tried::new(), t0).unwrap();

    // The new config changes a's weight and adds c.
    let new = group_in(&registry, "app", &[3, 1, 1], |_, _| {});
    assert_eq!(state(&new, 'a').fails(), 1);
    assert_eq!(state(&new, 'b').in_flight(), 1); // counted by both snapshots
    assert_eq!(state(&new, 'c').fails(), 0);
    assert_eq!(requests(&new, t0 + SEC, 4), "bcbc");
    held_b.failure(t0 + SEC);
    assert_eq!(state(&new, 'b').fails(), 1);
    assert_eq!(requests(&new, t0 + 2 * SEC, 2), "cc");

    // Another upstream with the same addresses has its own state.
    let other = group_in(&registry, "other", &[1, 1], |_, _| {});
    assert_eq!(state(&other, 'a').fails(), 0);
    assert_eq!(registry.live_states(), 5);
}

#[test]
fn state_of_a_removed_peer_goes_with_the_last_snapshot_using_it() {
    let registry = PeerRegistry::new();
    let t0 = Instant::now();
    let first = group_in(&registry, "app", &[1, 1], |_, _| {});
    let mut tried = Tried::new();
    first.pick(&mut tried, t0).unwrap().failure(t0);
    first.pick(&mut tried, t0).unwrap().failure(t0); // a and b both failed

    let without_b = group_in(&registry, "app", &[1], |_, _| {});
    assert_eq!(registry.live_states(), 2); // `first` still uses b
    drop(first);
    assert_eq!(registry.live_states(), 1);
    let with_b_again = group_in(&registry, "app", &[1, 1], |_, _| {});
    assert_eq!(state(&with_b_again, 'a').fails(), 1); // kept by `without_b`
    assert_eq!(state(&with_b_again, 'b').fails(), 0); // fresh
    drop(without_b);
}

#[test]
fn repeated_addresses_are_separate_peers() {
    let group = group(&[1, 1], |_, spec| spec.addr = addr(0));
    let t0 = Instant::now();
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    let fails: Vec<_> = group.peers().iter().map(|p| p.state().fails()).collect();
    assert_eq!(fails, [1, 0]);
    assert_eq!(group.pick(&mut Tried::new(), t0).unwrap().addr(), addr(0));
}

#[test]
fn primaries_come_before_backups_whatever_the_config_order() {
    let group = group(&[1, 1, 1], |i, spec| spec.backup = i == 0);
    let order: Vec<_> = group
        .peers()
        .iter()
        .map(|p| (p.index(), p.addr()))
        .collect();
    assert_eq!(order, [(0, addr(1)), (1, addr(2)), (2, addr(0))]);
    assert_eq!(requests(&group, Instant::now(), 4), "bcbc");
}

#[test]
fn groups_larger_than_64_peers_try_each_peer_once() {
    let weights = [1; 70];
    let group = group(&weights, |_, spec| spec.max_fails = 0);
    let t0 = Instant::now();
    let mut tried = Tried::new();
    let mut seen = Vec::new();
    for _ in 0..71 {
        let Ok(mut guard) = group.pick(&mut tried, t0) else {
            break;
        };
        seen.push(guard.addr().port());
        guard.failure(t0);
    }
    let want: Vec<u16> = (1..=70).collect();
    assert_eq!(seen, want);
    assert_eq!(tried.count(), 70);
}

#[test]
fn name_and_sizes() {
    let group = group(&[1, 1, 1], |i, spec| spec.backup = i == 2);
    assert_eq!(group.name(), "app");
    assert_eq!(
        (group.len(), group.tries(), group.is_empty()),
        (3, 3, false)
    );
}

#[test]
fn groups_and_guards_can_cross_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<UpstreamGroup>();
    shareable::<PeerGuard>();
    shareable::<PeerRegistry>();
}

#[test]
fn max_conns_holds_under_concurrent_picks() {
    let group = group(&[3, 1], |_, spec| {
        spec.max_conns = 2;
        spec.max_fails = 0;
    });
    let t0 = Instant::now();
    let served = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..2_000 {
                    let Ok(mut guard) = group.pick(&mut Tried::new(), t0) else {
                        continue;
                    };
                    for peer in group.peers() {
                        assert!(peer.state().in_flight() <= 2, "{}", peer.addr());
                    }
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::yield_now();
                    guard.success();
                }
            });
        }
    });
    assert!(served.into_inner() > 0);
    let in_flight: Vec<_> = group
        .peers()
        .iter()
        .map(|p| p.state().in_flight())
        .collect();
    assert_eq!(in_flight, [0, 0]);
}

#[test]
fn only_the_first_report_of_an_attempt_counts() {
    // Two peers, max_fails=1: a failure after a success on the same attempt is ignored.
    let group = group(&[1, 1], |_, _| {});
    let t0 = Instant::now();
    let mut a = group.pick(&mut Tried::new(), t0).unwrap();
    assert_eq!(letter(&a), 'a');
    a.success();
    assert!(!a.failure(t0), "a second report must not count");
    drop(a);
    assert_eq!(state(&group, 'a').fails(), 0);
    let mut b = group.pick(&mut Tried::new(), t0).unwrap();
    assert!(
        b.failure(t0),
        "the first failure with max_fails=1 takes b out"
    );
    assert!(!b.failure(t0));
    assert_eq!(state(&group, 'b').fails(), 1);
}

/// A group named "app" balanced by `method`, peers `a`, `b`… of these weights.
fn group_by(
    method: BalanceMethod,
    weights: &[u32],
    edit: impl Fn(usize, &mut PeerSpec),
) -> UpstreamGroup {
    let specs = weights.iter().enumerate().map(|(i, &weight)| {
        let mut spec = peer_spec(i, weight);
        edit(i, &mut spec);
        spec
    });
    let spec = upstream_with("app", specs.collect(), method);
    UpstreamGroup::new(&spec, &PeerRegistry::new())
}

fn hash(consistent: bool) -> BalanceMethod {
    BalanceMethod::Hash {
        key: "$request_uri".into(),
        consistent,
        bounded: None,
        location: "test.conf:1:1".into(),
    }
}

fn keyed(key: &str) -> Affinity<'_> {
    Affinity {
        client_ip: None,
        key: Some(key.as_bytes()),
    }
}

#[test]
fn least_conn_group_counts_what_its_guards_hold() {
    let group = group_by(BalanceMethod::LeastConn, &[1, 1, 1], |_, _| {});
    let t0 = Instant::now();
    let held: Vec<PeerGuard> = (0..3)
        .map(|_| group.pick(&mut Tried::new(), t0).unwrap())
        .collect();
    let letters: String = held.iter().map(letter).collect();
    assert_eq!(letters, "abc", "each new request goes to an idle peer");
    let mut held = held;
    drop(held.remove(0)); // a

    assert_eq!(requests(&group, t0, 3), "aaa", "a is the only idle peer");
}

#[test]
fn least_conn_moves_to_backups_only_when_no_primary_is_eligible() {
    let group = group_by(BalanceMethod::LeastConn, &[1, 1, 1, 1], |i, spec| {
        spec.backup = i >= 2;
    });
    let t0 = Instant::now();
    let _busy_a = group.pick(&mut Tried::new(), t0).unwrap();
    let _busy_b = group.pick(&mut Tried::new(), t0).unwrap();
    // Both primaries are busy, yet eligible: the idle backups stay out. (Currents: a took
    // the first tie, b won alone; now a, b tie again at [-1, 1]: b, then a.)
    assert_eq!(requests(&group, t0, 2), "ba");
    let mut tried = Tried::new();
    group.pick(&mut tried, t0).unwrap().failure(t0);
    group.pick(&mut tried, t0).unwrap().failure(t0);
    // Backups balance by least_conn too.
    let c = group.pick(&mut tried, t0).unwrap();
    assert_eq!(letter(&c), 'c');
    assert_eq!(requests(&group, t0 + SEC, 3), "ddd");
}

#[test]
fn hash_groups_send_a_key_to_one_peer_and_a_retry_elsewhere() {
    for consistent in [false, true] {
        let group = group_by(hash(consistent), &[1, 1, 1], |_, _| {});
        let t0 = Instant::now();
        let first = |key| {
            let mut guard = group.pick_with(&mut Tried::new(), t0, keyed(key)).unwrap();
            guard.success();
            letter(&guard)
        };
        let keys = ["/a", "/b", "/c", "/d", "/e", "/f"];
        let once: String = keys.iter().map(|key| first(key)).collect();
        let again: String = keys.iter().map(|key| first(key)).collect();
        assert_eq!(once, again, "consistent={consistent}");
        assert!(once.chars().collect::<std::collections::HashSet<_>>().len() > 1);

        let mut tried = Tried::new();
        let mut seen = String::new();
        while let Ok(mut guard) = group.pick_with(&mut tried, t0, keyed("/a")) {
            seen.push(letter(&guard));
            guard.success();
        }
        assert_eq!(seen.len(), 3, "every peer once: {seen}");
        assert_eq!(seen.chars().next(), once.chars().next());
    }
}

#[test]
fn hash_methods_reach_backups_written_before_them_through_round_robin() {
    // nginx accepts `server … backup` before `ip_hash`/`hash`/`random`, and reaches the
    // backups once its walk falls back to round robin and no primary is left.
    for method in [
        BalanceMethod::IpHash,
        hash(false),
        hash(true),
        BalanceMethod::Random {
            two: true,
            least_time: None,
        },
    ] {
        let group = group_by(method.clone(), &[1, 1, 1], |i, spec| spec.backup = i == 2);
        let t0 = Instant::now();
        let affinity = Affinity {
            client_ip: Some([10, 0, 0, 1].into()),
            key: Some(b"/x"),
        };
        let mut tried = Tried::new();
        let mut seen = String::new();
        while let Ok(mut guard) = group.pick_with(&mut tried, t0, affinity) {
            seen.push(letter(&guard));
            guard.failure(t0);
        }
        let mut sorted: Vec<char> = seen.chars().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, ['a', 'b', 'c'], "{method:?}: {seen}");
        assert_eq!(seen.chars().last(), Some('c'), "{method:?}: backup last");
    }
}

#[test]
fn ip_hash_group_keeps_a_client_on_one_peer() {
    let group = group_by(BalanceMethod::IpHash, &[1, 1, 1], |_, _| {});
    let t0 = Instant::now();
    let client = |ip: [u8; 4]| {
        let affinity = Affinity {
            client_ip: Some(ip.into()),
            key: None,
        };
        let mut guard = group.pick_with(&mut Tried::new(), t0, affinity).unwrap();
        guard.success();
        letter(&guard)
    };
    // 10.0.0.0/24 hashes to a, 192.168.1.0/24 to b (see ip_hash's tests).
    for host in [1, 2, 200] {
        assert_eq!(client([10, 0, 0, host]), 'a');
        assert_eq!(client([192, 168, 1, host]), 'b');
    }
}

// === slow_start ===

/// How many of `n` new requests at `now` each peer gets, by letter order.
fn shares(group: &UpstreamGroup, now: Instant, n: usize) -> Vec<usize> {
    let mut counts = vec![0; group.len()];
    for _ in 0..n {
        let guard = group.pick(&mut Tried::new(), now).expect("a peer");
        counts[(guard.addr().port() - 1) as usize] += 1;
    }
    counts
}

/// New requests at `now` until one goes to `a`, which succeeds; the others succeed too.
fn until_a_succeeds(group: &UpstreamGroup, now: Instant) {
    for _ in 0..10 {
        let mut guard = group.pick(&mut Tried::new(), now).expect("a peer");
        guard.success();
        if letter(&guard) == 'a' {
            return;
        }
    }
    panic!("a never picked");
}

/// Peers `a` and `b` of weight 1, `a` with `slow_start=10s`.
fn a_with_slow_start() -> UpstreamGroup {
    group(&[1, 1], |i, spec| {
        if i == 0 {
            spec.slow_start = 10 * SEC;
        }
    })
}

#[test]
fn a_recovered_peer_climbs_back_to_its_weight_over_slow_start() {
    // a: slow_start=10s; a and b weight 1. a fails, sits out fail_timeout, its trial succeeds.
    let group = a_with_slow_start();
    let t0 = Instant::now();
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    let t1 = t0 + 11 * SEC;
    until_a_succeeds(&group, t1); // the trial: a recovers at t1
    assert_eq!(state(&group, 'a').fails(), 0);
    // Shares in thousandths: a has 1000 × elapsed / 10s, b 1000. Smooth round robin hands out
    // those proportions over a whole cycle (give or take the one request the currents left
    // over from the cycle before).
    let cases = [(1, [100, 1000]), (5, [500, 1000]), (10, [1000, 1000])];
    for (after, want) in cases {
        let got = shares(&group, t1 + after * SEC, want.iter().sum());
        let close = got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 1);
        assert!(close, "{after}s into the ramp: {got:?}, want {want:?}");
    }
}

#[test]
fn a_peer_is_at_rest_again_once_forgiven_at_full_weight_and_off_its_ramp() {
    // At rest (unrest 0), picks, choices and successes skip the peer's health lock; the
    // sequences above check the choices, this the bookkeeping that decides which path runs.
    use crate::upstream::health::passive::{FAILING, REDUCED};
    let group = a_with_slow_start();
    let t0 = Instant::now();
    assert_eq!(state(&group, 'a').unrest(), 0, "a new peer is at rest");
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    assert_eq!(
        state(&group, 'a').unrest(),
        FAILING | REDUCED,
        "failed, weight 0"
    );
    let t1 = t0 + 11 * SEC;
    until_a_succeeds(&group, t1); // the trial took back the penalty; its success, the failure
    assert_eq!(
        state(&group, 'a').unrest(),
        REDUCED,
        "forgiven, on its ramp"
    );
    let half = shares(&group, t1 + 5 * SEC, 1500); // 500 and 1000, give or take one
    assert!(half[0].abs_diff(500) <= 1, "{half:?}");
    assert_eq!(state(&group, 'a').unrest(), REDUCED, "half way up the ramp");
    assert_eq!(shares(&group, t1 + 10 * SEC, 2), [1, 1]);
    assert_eq!(state(&group, 'a').unrest(), 0, "the ramp is over");
    assert_eq!(shares(&group, t1 + 10 * SEC, 10), [5, 5]);
}

#[test]
fn a_success_that_forgives_without_an_outage_starts_no_ramp() {
    // max_fails=2: one failure never took a out, so no ramp when it is forgiven.
    let group = group(&[1, 1], |_, spec| {
        spec.slow_start = 10 * SEC;
        spec.max_fails = 2;
    });
    let t0 = Instant::now();
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    until_a_succeeds(&group, t0 + 11 * SEC);
    assert_eq!(state(&group, 'a').fails(), 0);
    assert_eq!(shares(&group, t0 + 12 * SEC, 10), [5, 5]);
}

#[test]
fn least_conn_lets_a_recovering_peer_carry_load_in_proportion_to_its_ramp() {
    let group = group_by(BalanceMethod::LeastConn, &[1, 1], |i, spec| {
        if i == 0 {
            spec.slow_start = 10 * SEC;
        }
    });
    let t0 = Instant::now();
    group.pick(&mut Tried::new(), t0).unwrap().failure(t0);
    let t1 = t0 + 11 * SEC;
    until_a_succeeds(&group, t1); // a's trial: recovered at t1
    // 2s into a 10s ramp a weighs 0.2 of b. Keep every request in flight: b carries 5 for each
    // one a carries (a's 2nd request waits until b has 5, as 2 / 0.2 = 10 > 5 ... and so on).
    let held: Vec<PeerGuard> = (0..30)
        .map(|_| group.pick(&mut Tried::new(), t1 + 2 * SEC).unwrap())
        .collect();
    let on_a = held.iter().filter(|g| letter(g) == 'a').count();
    assert_eq!((on_a, held.len() - on_a), (5, 25));
    drop(held);
    // Once the ramp is over they share equally again.
    let held: Vec<PeerGuard> = (0..30)
        .map(|_| group.pick(&mut Tried::new(), t1 + 10 * SEC).unwrap())
        .collect();
    assert_eq!(held.iter().filter(|g| letter(g) == 'a').count(), 15);
}

#[test]
fn a_peer_a_reload_adds_to_a_serving_group_ramps_up_and_startup_peers_do_not() {
    let registry = PeerRegistry::new();
    let t0 = Instant::now();
    let slow = |_: usize, spec: &mut PeerSpec| spec.slow_start = 10 * SEC;
    let specs = |weights: &[u32]| -> Vec<PeerSpec> {
        let specs = weights.iter().enumerate().map(|(i, &w)| {
            let mut spec = peer_spec(i, w);
            slow(i, &mut spec);
            spec
        });
        specs.collect()
    };
    // Startup: a and b are both new, nobody ramps.
    let first = UpstreamGroup::new_at(&upstream("app", specs(&[1, 1])), &registry, t0);
    assert_eq!(shares(&first, t0, 10), [5, 5]);
    // A reload adds c: it joins a serving group and climbs over 10s; a and b keep full weight.
    let second = UpstreamGroup::new_at(&upstream("app", specs(&[1, 1, 1])), &registry, t0);
    assert_eq!(shares(&second, t0 + 5 * SEC, 2500), [1000, 1000, 500]);
    assert_eq!(shares(&second, t0 + 10 * SEC, 30), [10, 10, 10]);
    // A new upstream in the same reload starts like at startup.
    let other = UpstreamGroup::new_at(&upstream("other", specs(&[1, 1])), &registry, t0);
    assert_eq!(shares(&other, t0, 10), [5, 5]);
    drop(first);
}

// === queue ===

fn queued(weights: &[u32], size: usize, timeout: Duration) -> Arc<UpstreamGroup> {
    let specs = weights.iter().enumerate().map(|(i, &weight)| {
        let mut spec = peer_spec(i, weight);
        spec.max_conns = 1;
        spec
    });
    let mut spec = upstream("app", specs.collect());
    spec.queue = Some(QueueSpec { size, timeout });
    Arc::new(UpstreamGroup::new(&spec, &PeerRegistry::new()))
}

/// Starts a request that waits for a peer; it reports the letter it got (or `-`) on `done`.
fn waiter(
    group: &Arc<UpstreamGroup>,
    n: usize,
    done: &tokio::sync::mpsc::UnboundedSender<(usize, Result<char, Unavailable>)>,
) -> tokio::task::JoinHandle<Option<PeerGuard>> {
    let (group, done) = (group.clone(), done.clone());
    tokio::spawn(async move {
        let got = group
            .pick_waiting(&mut Tried::new(), Affinity::default())
            .await;
        let _ = done.send((n, got.as_ref().map(letter).map_err(|e| *e)));
        got.ok()
    })
}

/// Lets spawned tasks run until they all wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn queued_requests_get_freed_slots_in_arrival_order() {
    let group = queued(&[1], 2, 60 * SEC);
    let held = group
        .pick_waiting(&mut Tried::new(), Affinity::default())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = waiter(&group, 1, &tx);
    settle().await;
    let second = waiter(&group, 2, &tx);
    settle().await;
    assert_eq!(group.waiting.len(), 2);
    // A third finds the line full: 502 at once.
    let third = group
        .pick_waiting(&mut Tried::new(), Affinity::default())
        .await;
    assert_eq!(third.unwrap_err(), Unavailable::QueueFull);

    drop(held);
    assert_eq!(rx.recv().await, Some((1, Ok('a'))));
    let first = first.await.unwrap();
    settle().await;
    assert!(
        rx.try_recv().is_err(),
        "the second still waits for the first's slot"
    );
    drop(first);
    assert_eq!(rx.recv().await, Some((2, Ok('a'))));
    drop(second.await.unwrap());
    assert!(group.waiting.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_request_does_not_overtake_the_waiting_ones() {
    let group = queued(&[1, 1], 5, 60 * SEC);
    let a = group.pick(&mut Tried::new(), Instant::now()).unwrap();
    let b = group.pick(&mut Tried::new(), Instant::now()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let early = waiter(&group, 1, &tx);
    settle().await;
    drop(a); // a slot on `a`: the waiter takes it before any newcomer can
    let late = waiter(&group, 2, &tx);
    assert_eq!(rx.recv().await, Some((1, Ok('a'))));
    drop(b);
    assert_eq!(rx.recv().await, Some((2, Ok('b'))));
    drop((early.await, late.await));
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_at_most_the_queue_timeout() {
    let group = queued(&[1], 2, 5 * SEC);
    let _held = group.pick(&mut Tried::new(), Instant::now()).unwrap();
    let started = Instant::now();
    let got = group
        .pick_waiting(&mut Tried::new(), Affinity::default())
        .await;
    assert_eq!(got.unwrap_err(), Unavailable::QueueTimeout);
    assert_eq!(started.elapsed(), 5 * SEC);
    assert!(group.waiting.is_empty(), "it left the line");
}

#[tokio::test(start_paused = true)]
async fn the_queue_waits_out_load_not_outages() {
    // Both peers failed (not busy): no waiting, "no live upstreams" at once.
    let group = queued(&[1, 1], 2, 60 * SEC);
    let now = Instant::now();
    let mut tried = Tried::new();
    group.pick(&mut tried, now).unwrap().failure(now);
    group.pick(&mut tried, now).unwrap().failure(now);
    let got = group
        .pick_waiting(&mut Tried::new(), Affinity::default())
        .await;
    assert_eq!(got.unwrap_err(), Unavailable::NoLivePeer);
    // Without `queue`, a busy group fails at once as before.
    let plain = group_by(BalanceMethod::RoundRobin, &[1], |_, spec| {
        spec.max_conns = 1
    });
    let _held = plain.pick(&mut Tried::new(), Instant::now()).unwrap();
    let got = plain
        .pick_waiting(&mut Tried::new(), Affinity::default())
        .await;
    assert_eq!(got.unwrap_err(), Unavailable::NoLivePeer);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_client_went_away_leaves_the_line() {
    let group = queued(&[1], 1, 60 * SEC);
    let held = group.pick(&mut Tried::new(), Instant::now()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let gone = waiter(&group, 1, &tx);
    settle().await;
    gone.abort();
    settle().await;
    assert!(group.waiting.is_empty());
    let next = waiter(&group, 2, &tx);
    settle().await;
    drop(held);
    assert_eq!(rx.recv().await, Some((2, Ok('a'))));
    drop(next.await);
}

/// Attempts are timed only in groups whose balancer ranks by latency: a round-robin group
/// records no estimate and no in-flight start times, a `least_time` one both.
#[test]
fn only_latency_balancers_time_their_attempts() {
    let registry = PeerRegistry::new();
    for (name, method, timed) in [
        ("rr", BalanceMethod::RoundRobin, false),
        (
            "lt",
            BalanceMethod::LeastTime {
                mode: crate::config::model::TimeMode::Header,
                inflight: false,
            },
            true,
        ),
    ] {
        let group = UpstreamGroup::new(
            &upstream_with(name, vec![peer_spec(0, 1)], method),
            &registry,
        );
        let t0 = Instant::now();
        let mut guard = group.pick(&mut Tried::new(), t0).unwrap();
        assert_eq!(state(&group, 'a').in_flight(), 1, "{name}");
        let age = state(&group, 'a').in_flight_age_us(t0 + SEC);
        assert_eq!(age > 0.0, timed, "{name}: in-flight age {age}");
        guard.success_at(t0 + 5 * MS);
        guard.body_done(t0 + 9 * MS);
        let timing = *state(&group, 'a').timing();
        assert_eq!(timing.header.known().is_some(), timed, "{name}");
        assert_eq!(timing.last_byte.known().is_some(), timed, "{name}");
        assert_eq!(state(&group, 'a').in_flight_age_us(t0 + SEC), 0.0, "{name}");
    }
}

#[test]
fn a_group_whose_names_have_no_address_has_no_live_peer() {
    // A group that follows DNS before its names resolve (or after NXDOMAIN): no primary, maybe
    // a fixed backup. Every method answers "no live upstreams" or reaches the backup.
    let methods = [
        BalanceMethod::RoundRobin,
        BalanceMethod::LeastConn,
        BalanceMethod::IpHash,
        hash(false),
        hash(true),
        BalanceMethod::Random {
            two: true,
            least_time: None,
        },
        BalanceMethod::LeastTime {
            mode: crate::config::model::TimeMode::Header,
            inflight: false,
        },
    ];
    let affinity = Affinity {
        client_ip: Some([10, 0, 0, 1].into()),
        key: Some(b"/x"),
    };
    for method in methods {
        let empty = group_by(method.clone(), &[], |_, _| {});
        assert!(empty.is_empty());
        let mut tried = Tried::new();
        let picked = empty.pick_with(&mut tried, Instant::now(), affinity);
        assert_eq!(picked.err(), Some(NoLivePeer), "{method:?}");
        let backup_only = group_by(method.clone(), &[1], |_, spec| spec.backup = true);
        let mut tried = Tried::new();
        let picked = backup_only.pick_with(&mut tried, Instant::now(), affinity);
        assert_eq!(picked.map(|g| g.addr()).ok(), Some(addr(0)), "{method:?}");
    }
}
