//! Whether a failed attempt may move on to the next peer: nginx's `proxy_next_upstream`, written
//! as a pure function of how far the attempt got.
//!
//! One difference from nginx: a request the peer provably did not read ([`Reached::Unread`]:
//! the connection was reset before one byte of a response) may be sent again whatever its
//! method, when imbang kept its body.

use crate::config::model::NextUpstream;

/// How far a failed attempt got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// Connect failed (or a pooled connection was found closed before writing): the peer saw nothing.
    Nothing,
    /// Request bytes were written, but the peer reset the connection (`ECONNRESET`, or `EPIPE`)
    /// before one byte of a response arrived. Linux resets a connection whose socket is closed
    /// with received data still unread, or that receives data once closed; a peer that read the
    /// whole request and then closed or died sends a FIN instead. So the peer's application did
    /// not read all of the request (unless it closed abortively, with `SO_LINGER` 0).
    Unread,
    /// Request bytes may have been written: the peer may have acted on them (among others: the
    /// connection closed with a FIN before a response, or a read timed out).
    RequestSent,
    /// The peer answered with this status, and nothing has reached the client yet.
    ResponseHead(u16),
}

/// What went wrong in the attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Error,
    Timeout,
    /// The peer answered (only with `Reached::ResponseHead`).
    Status,
}

/// Facts about the request that decide whether sending it again is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestFacts {
    /// GET, HEAD, PUT, DELETE, OPTIONS, TRACE (nginx treats POST, LOCK, PATCH as non-idempotent).
    pub idempotent: bool,
    /// The body can be sent again (it is empty, or imbang kept a copy).
    pub body_replayable: bool,
}

/// nginx's rules, for the conditions listed in `proxy_next_upstream`: nothing sent → always
/// safe; once sent, only an idempotent request (or `non_idempotent`) whose body can be
/// replayed. Plus imbang's: a request the peer did not read ([`Reached::Unread`]) whose body
/// can be replayed, whatever its method.
pub fn may_retry(
    reached: Reached,
    failure: Failure,
    req: RequestFacts,
    policy: &NextUpstream,
) -> bool {
    let condition = match (reached, failure) {
        (Reached::ResponseHead(status), _) => status_listed(status, policy),
        (_, Failure::Timeout) => policy.timeout,
        (_, _) => policy.error,
    };
    condition && may_send_again(reached, req, policy.non_idempotent)
}

/// Whether sending the request again cannot make the peers execute it twice (or, with
/// `non_idempotent`, is allowed to), after an attempt that got as far as `reached`.
pub fn may_send_again(reached: Reached, req: RequestFacts, non_idempotent: bool) -> bool {
    match reached {
        // The request was never handed over: it is still whole, streamed body included.
        Reached::Nothing => true,
        Reached::Unread => req.body_replayable,
        Reached::RequestSent | Reached::ResponseHead(_) => {
            req.body_replayable && (req.idempotent || non_idempotent)
        }
    }
}

fn status_listed(status: u16, p: &NextUpstream) -> bool {
    match status {
        500 => p.http_500,
        502 => p.http_502,
        503 => p.http_503,
        504 => p.http_504,
        403 => p.http_403,
        404 => p.http_404,
        429 => p.http_429,
        _ => false,
    }
}

/// Whether a response with `status` counts as a peer failure (for `max_fails`): the statuses
/// listed in `proxy_next_upstream`, except 403 and 404, which never do (as nginx).
pub fn status_is_failure(status: u16, policy: &NextUpstream) -> bool {
    status != 403 && status != 404 && status_listed(status, policy)
}

/// nginx's idempotent methods: everything but POST, LOCK and PATCH.
pub fn is_idempotent(method: &http::Method) -> bool {
    !matches!(method.as_str(), "POST" | "LOCK" | "PATCH")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: RequestFacts = RequestFacts {
        idempotent: true,
        body_replayable: true,
    };
    const POST: RequestFacts = RequestFacts {
        idempotent: false,
        body_replayable: true,
    };
    const STREAMED_PUT: RequestFacts = RequestFacts {
        idempotent: true,
        body_replayable: false,
    };
    /// A PUT whose body (up to `client_body_buffer_size`) imbang kept in memory.
    const KEPT_PUT: RequestFacts = GET;
    const STREAMED_POST: RequestFacts = RequestFacts {
        idempotent: false,
        body_replayable: false,
    };

    #[test]
    fn retry_decision_table() {
        let default = NextUpstream::default();
        let off = NextUpstream {
            error: false,
            timeout: false,
            ..NextUpstream::default()
        };
        let with_502 = NextUpstream {
            http_502: true,
            ..NextUpstream::default()
        };
        let non_idem = NextUpstream {
            non_idempotent: true,
            ..NextUpstream::default()
        };
        use Failure::*;
        use Reached::*;
        let cases = [
            // (reached, failure, request, policy, expected)
            (Nothing, Error, GET, default, true),
            (Nothing, Error, POST, default, true),
            (Nothing, Timeout, POST, default, true),
            (Nothing, Error, STREAMED_PUT, default, true),
            (Nothing, Error, GET, off, false),
            (RequestSent, Error, GET, default, true),
            (RequestSent, Error, POST, default, false),
            (RequestSent, Timeout, POST, default, false),
            (RequestSent, Error, POST, non_idem, true),
            (RequestSent, Error, STREAMED_PUT, default, false),
            (ResponseHead(502), Status, GET, default, false),
            (ResponseHead(502), Status, GET, with_502, true),
            (ResponseHead(502), Status, POST, with_502, false),
            (ResponseHead(500), Status, GET, with_502, false),
            (Nothing, Error, STREAMED_POST, default, true),
            (RequestSent, Error, STREAMED_POST, non_idem, false),
            (RequestSent, Error, KEPT_PUT, default, true),
            (RequestSent, Timeout, KEPT_PUT, default, true),
            (ResponseHead(502), Status, KEPT_PUT, with_502, true),
            (ResponseHead(502), Status, STREAMED_PUT, with_502, false),
            // Reset before a response byte: the peer did not read it, so any method moves on
            // when the body was kept, and only when `error` is listed.
            (Unread, Error, POST, default, true),
            (Unread, Error, GET, default, true),
            (Unread, Error, KEPT_PUT, default, true),
            (Unread, Error, POST, off, false),
            (Unread, Error, STREAMED_POST, default, false),
            (Unread, Error, STREAMED_POST, non_idem, false),
            (Unread, Error, STREAMED_PUT, default, false),
        ];
        for (i, (reached, failure, req, policy, want)) in cases.into_iter().enumerate() {
            assert_eq!(may_retry(reached, failure, req, &policy), want, "case {i}");
        }
    }

    #[test]
    fn what_may_be_sent_again_whatever_proxy_next_upstream_says() {
        use Reached::*;
        let cases = [
            // (reached, request, non_idempotent, expected)
            (Nothing, STREAMED_POST, false, true),
            (Unread, POST, false, true),
            (Unread, STREAMED_POST, true, false),
            (RequestSent, POST, false, false),
            (RequestSent, POST, true, true),
            (RequestSent, KEPT_PUT, false, true),
            (RequestSent, STREAMED_PUT, true, false),
            (ResponseHead(502), POST, false, false),
        ];
        for (i, (reached, req, non_idem, want)) in cases.into_iter().enumerate() {
            assert_eq!(may_send_again(reached, req, non_idem), want, "case {i}");
        }
    }

    #[test]
    fn not_found_and_forbidden_never_count_as_failures() {
        let all = NextUpstream {
            http_403: true,
            http_404: true,
            http_502: true,
            ..NextUpstream::default()
        };
        assert!(!status_is_failure(403, &all));
        assert!(!status_is_failure(404, &all));
        assert!(status_is_failure(502, &all));
        assert!(!status_is_failure(503, &all));
    }

    #[test]
    fn post_lock_patch_are_not_idempotent() {
        for (m, want) in [
            ("GET", true),
            ("PUT", true),
            ("DELETE", true),
            ("POST", false),
            ("PATCH", false),
            ("LOCK", false),
        ] {
            assert_eq!(
                is_idempotent(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                want,
                "{m}"
            );
        }
    }
}
