//! XEP-0202 Entity Time (`mod_time`): the server's clock in UTC (XEP-0082
//! format); the server reports its offset as `+00:00`.

use crate::element::Element;
use crate::module::{IqRequest, IqResult, Module, ServerContext};
use crate::ns;
use crate::stanza::StanzaError;

/// `mod_time`.
pub struct Time;

/// `YYYY-MM-DDThh:mm:ss.sssZ` for seconds/milliseconds since the Unix epoch.
pub fn xep0082(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in XEP-0082 form.
pub fn now_utc() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    xep0082(d.as_secs() as i64, d.subsec_millis())
}

impl Module for Time {
    fn name(&self) -> &'static str {
        "mod_time"
    }
    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::TIME]
    }
    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::TIME]
    }
    fn handle_server_iq(&self, _ctx: &dyn ServerContext, req: &IqRequest<'_>) -> IqResult {
        if req.is_set || req.payload.name != "time" {
            return Err(StanzaError::bad_request());
        }
        Ok(Some(
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(Element::new("utc", ns::TIME).with_text(now_utc())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(xep0082(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(xep0082(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }
}
