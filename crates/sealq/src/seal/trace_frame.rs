//! Version-3 payload envelopes: the producer's W3C trace context sealed
//! with the payload, so it reaches the handler without the broker reading
//! or changing it (`docs/envelope.md`, "Version 3").
//!
//! The plaintext of a version-3 envelope is
//! `trace_len: u8 | traceparent: trace_len ASCII bytes | payload`;
//! everything else (header, associated data with the policy) is version
//! 2's, under its own domain `sealq-envelope-v3` and version byte `0x03`.
//! Opening strips the frame: every reader but the worker sees the payload
//! exactly as before, and version-1 and version-2 envelopes open as they
//! always did.

use zeroize::Zeroizing;

use crate::error::IntegrityError;
use crate::model::trace_parent::TraceParent;

/// `trace | payload`, framed for a version-3 envelope.
pub(crate) fn frame(trace: &TraceParent, payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let t = trace.as_str().as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(1 + t.len() + payload.len()));
    // A TraceParent is 55 bytes: it fits the length byte.
    out.push(t.len() as u8);
    out.extend_from_slice(t);
    out.extend_from_slice(payload);
    out
}

/// Split an opened version-3 plaintext into its payload and trace context.
/// It authenticated, so a bad frame means a producer bug or a broken
/// keyring: refused as [`IntegrityError::Tampered`] all the same.
pub(crate) fn unframe(
    mut plain: Zeroizing<Vec<u8>>,
) -> Result<(Zeroizing<Vec<u8>>, TraceParent), IntegrityError> {
    let len = usize::from(*plain.first().ok_or(IntegrityError::Tampered)?);
    let text = plain.get(1..1 + len).ok_or(IntegrityError::Tampered)?;
    let text = std::str::from_utf8(text).map_err(|_| IntegrityError::Tampered)?;
    let trace = TraceParent::parse(text).map_err(|_| IntegrityError::Tampered)?;
    plain.drain(..1 + len);
    Ok((plain, trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::id::TaskId;
    use crate::model::task::TaskMeta;
    use crate::seal::data_key::DataKey;
    use crate::seal::envelope::{Aad, Purpose, VERSION, VERSION_V3};
    use crate::seal::keyring::Keyring;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn meta() -> TaskMeta {
        TaskMeta {
            producer: "p".into(),
            created_at_ms: 1,
            not_after_ms: Some(9),
            deadline_ms: None,
            timeout_ms: Some(5),
            max_retries: 2,
            backoff: Default::default(),
            retention_ms: 3,
            subject_tag: None,
            not_before_ms: None,
        }
    }

    #[test]
    fn a_traced_envelope_opens_to_the_payload_and_its_trace() {
        let k = Keyring::generate();
        let m = meta();
        let aad = Aad::new(Purpose::Payload, TaskId::new(), "q", "t", &m);
        let trace = TraceParent::parse(TP).unwrap();
        let sealed = k.seal_traced(&aad, &trace, b"payload").unwrap();
        assert_eq!(sealed[0], VERSION_V3);
        let (plain, got) = k.open_traced(&aad, &sealed).unwrap();
        assert_eq!((&plain[..], got), (&b"payload"[..], Some(trace.clone())));
        // Every other reader sees the payload alone.
        assert_eq!(&k.open(&aad, &sealed).unwrap()[..], b"payload");
        // An untraced envelope is version 2 and has no trace.
        let plain2 = k.seal(&aad, b"payload").unwrap();
        assert_eq!(plain2[0], VERSION);
        assert_eq!(k.open_traced(&aad, &plain2).unwrap().1, None);
        // The trace is sealed: not in the stored bytes.
        assert!(!sealed.windows(32).any(|w| w == &TP.as_bytes()[3..35]));
        // A subject's data key does the same.
        let dk = DataKey::generate().unwrap();
        let sealed = dk.seal_traced(&aad, &trace, b"x").unwrap();
        let (plain, got) = dk.open_traced(&aad, &sealed).unwrap();
        assert_eq!((&plain[..], got), (&b"x"[..], Some(trace)));
    }

    #[test]
    fn the_version_byte_is_bound_both_ways() {
        let k = Keyring::generate();
        let m = meta();
        let aad = Aad::new(Purpose::Payload, TaskId::new(), "q", "t", &m);
        let trace = TraceParent::parse(TP).unwrap();
        let mut v3 = k.seal_traced(&aad, &trace, b"payload").unwrap();
        v3[0] = VERSION;
        assert_eq!(k.open(&aad, &v3).unwrap_err(), IntegrityError::Tampered);
        let mut v2 = k.seal(&aad, b"payload").unwrap();
        v2[0] = VERSION_V3;
        assert_eq!(k.open(&aad, &v2).unwrap_err(), IntegrityError::Tampered);
    }

    #[test]
    fn a_bad_frame_is_refused() {
        for bad in [&b""[..], &[55u8, b'0'][..], &[3, b'a', b'b', b'c'][..]] {
            let e = unframe(Zeroizing::new(bad.to_vec())).unwrap_err();
            assert_eq!(e, IntegrityError::Tampered);
        }
    }
}
