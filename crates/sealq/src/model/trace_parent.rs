//! A W3C trace context `traceparent` (<https://www.w3.org/TR/trace-context/>),
//! carried sealed from the producer to the handler so the handler's work
//! joins the producer's trace (`EnqueueOptions::trace_parent`,
//! `TaskContext::trace_parent`; the bytes: `docs/envelope.md`, version 3).

use std::fmt;

use crate::error::{Error, Result};

/// A valid `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2
/// hex flags>`, lowercase, neither id all zeros (version `00`; a later
/// version's value is accepted when its first 55 characters have this
/// form, as the specification asks, and kept as those 55).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// Length of a version-00 `traceparent`.
pub const TRACE_PARENT_LEN: usize = 55;

impl TraceParent {
    /// Parse a `traceparent` header value; a clear error says what is wrong.
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidArgument {
            what: "traceparent",
            reason: format!("{reason}; expected 00-<32 hex>-<16 hex>-<2 hex> (W3C trace context)"),
        };
        let v = value.trim();
        let head = v.get(..TRACE_PARENT_LEN).ok_or_else(|| bad("too short"))?;
        let parts: Vec<&str> = head.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return Err(bad("not four dash-separated fields"));
        };
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || *version == "ff" {
            return Err(bad("bad version"));
        }
        if *version == "00" && v.len() != TRACE_PARENT_LEN {
            return Err(bad("version 00 is exactly 55 characters"));
        }
        if !hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return Err(bad("bad trace id"));
        }
        if !hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
            return Err(bad("bad parent id"));
        }
        if !hex(flags, 2) {
            return Err(bad("bad flags"));
        }
        Ok(TraceParent(head.to_owned()))
    }

    /// The value, 55 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }
}

/// With the `otel` feature: to and from OpenTelemetry span contexts.
#[cfg(feature = "otel")]
impl TraceParent {
    /// The trace context of the current `tracing` span as OpenTelemetry
    /// sees it (`tracing-opentelemetry`'s layer installed), to pass to
    /// `EnqueueOptions::trace_parent`; `None` without a valid one.
    pub fn from_current_span() -> Option<Self> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let value = format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        Self::parse(&value).ok()
    }

    /// An OpenTelemetry context whose remote parent is this trace context:
    /// what a span's `set_parent` takes to join the producer's trace.
    pub fn to_otel_context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        // Parsed: every part is hex of the right length.
        let trace_id = TraceId::from_hex(&self.0[3..35]).unwrap_or(TraceId::INVALID);
        let span_id = SpanId::from_hex(&self.0[36..52]).unwrap_or(SpanId::INVALID);
        let flags = u8::from_str_radix(&self.0[53..55], 16).unwrap_or(0);
        let sc = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let t = TraceParent::parse(OK).unwrap();
        assert_eq!(t.as_str(), OK);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version: its first 55 characters.
        let later = TraceParent::parse(&format!("01{}-extra", &OK[2..])).unwrap();
        assert_eq!(later.as_str().len(), TRACE_PARENT_LEN);
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            &OK.to_uppercase(),
            &OK.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &OK.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &format!("ff{}", &OK[2..]),
            &format!("{OK}-x"),
            &OK.replace('-', "_"),
        ] {
            let e = TraceParent::parse(bad).unwrap_err().to_string();
            assert!(e.contains("traceparent"), "{bad}: {e}");
        }
    }
}
