//! Conversion recording: attribution, idempotency and GMV arithmetic in one
//! atomic Lua script (one round trip on the happy path).
//!
//! Keys (see `docs/redis-schema.md`):
//! - `ll:conv:{merchant}:{order}:{sub}:{status}:{refund_id}` hash `{fp, res}`:
//!   the durable idempotency record (no TTL): same key + same fingerprint is a
//!   duplicate (original result returned), same key + other fingerprint a conflict.
//!   `res` is what the script computed (see [`Receipt`]); the fields the merchant
//!   sent are not repeated (the fingerprint makes them equal in a duplicate).
//! - `ll:crs:{minute}` hash, field = the token's ms: the click records of that ms, a
//!   `{token} {record}` line each (read only, [`keys::click_slots`]); a token not there is
//!   looked for in the legacy `ll:cr:{minute}` hash, field = click token.
//! - `ll:order:{merchant}:{order}:{sub}` hash, one field `o` =
//!   `{state}|{paid}|{refunded}|{currency}|{token}|{note}|{creator}|{platform}|{item}|{paid_at_ms}`
//!   (state `paid`, `refunded` or `cancelled`; amounts in minor units; `paid_at_ms` the
//!   payment's `occurred_at`, empty before payment): the order line's state and
//!   attribution, so refunds work after the click record has expired, and no refund is
//!   dated before its payment. Lines written by earlier versions (one hash field per
//!   value, or nine fields without `paid_at_ms`: the click's time stands in for it) are
//!   read and rewritten in this form on their next event.
//! - `ll:conversions` stream: one entry per accepted conversion, written in the
//!   same script as its idempotency record, so each accepted conversion appears
//!   exactly once. Its `conversion` field is
//!   `{merchant}|{order}|{sub}|{status}|{refund_id}|{occurred_at_ms}|{amount}|{token}|{raw_status}`
//!   (`raw_status` last: it may contain `|`). Its `agg` field carries the counter deltas
//!   ([`ConversionDeltas`]); the aggregator adds them to the `ll:agg:{dim}:{id}:{day}`
//!   fields `conversions`, `refunds`, `paid:{CUR}`, `refunded:{CUR}` of the note,
//!   creator, item and platform, on the conversion's day, in batches (one `HINCRBY`
//!   per counter per batch instead of eight per conversion).

use redis::Value;
use redis::aio::ConnectionLike;

use crate::conversion::Conversion;
use crate::conversion::auth::Merchant;
use crate::store::keys;

/// Stream of accepted conversions, for downstream consumers.
pub const CONVERSION_STREAM: &str = "ll:conversions";

/// What the script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Attributed and counted; the result.
    Attributed(Receipt),
    /// Same report seen before; the original result.
    Duplicate(Receipt),
    /// Same idempotency key, different content.
    Conflict,
    /// No click record for the token (unknown, or expired past window + grace).
    UnknownClick,
    /// The click's platform (named) is not one this merchant may report on.
    PlatformNotAllowed(String),
    /// `item_id` was sent and differs from the click's item.
    ItemMismatch,
    /// The order event is before the click or after the attribution window.
    OutsideWindow,
    /// The order event is dated later than the server's clock allows (`latest_ms`).
    InFuture,
    /// A new report in a currency without a minor unit
    /// ([`crate::conversion::has_minor_unit`]).
    NoMinorUnit,
    /// A refund or cancel dated before the order line's payment (before its second).
    BeforePayment,
    /// The order's state (named) does not allow this status.
    InvalidTransition(String),
    /// Refunds would exceed the paid amount.
    RefundExceedsPaid,
    /// A refund in another currency than the payment.
    CurrencyMismatch,
}

const SCRIPT: &str = r#"
local ck, ik, ok = ARGV[1], ARGV[2], ARGV[3]
local fp, status, amount, cur = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local occurred, window = tonumber(ARGV[8]), tonumber(ARGV[9])
local allowed, want_item, day = ARGV[10], ARGV[11], ARGV[12]
local prev = redis.call('HMGET', ik, 'fp', 'res')
if prev[1] then
  if prev[1] == fp then return {'dup', prev[2]} end
  return {'conflict'}
end
if ARGV[24] ~= '1' then return {'no_minor_unit'} end
if occurred > tonumber(ARGV[23]) then return {'in_future'} end
-- Values travel as the strings they arrived in: each number Lua turns back into a string
-- costs a printf, so only refunds and cancels (which add and subtract) format any.
local o = redis.call('HMGET', ok, 'o', 'state')
local state, paid, refunded, ocur, token, note, creator, platform, item, paid_at
local legacy = false
if o[1] then
  state, paid, refunded, ocur, token, note, creator, platform, item, paid_at =
    string.match(o[1], '^(%a+)|(%d+)|(%d+)|(%u+)|([^|]+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(%d*)$')
  if not state then
    -- A line written before the payment's time was kept: nine fields.
    state, paid, refunded, ocur, token, note, creator, platform, item =
      string.match(o[1], '^(%a+)|(%d+)|(%d+)|(%u+)|([^|]+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  end
  if not state then return redis.error_reply('malformed order line ' .. ok) end
elseif o[2] then
  -- An order line written before `o` existed: one field per value.
  legacy = true
  local l = redis.call('HMGET', ok, 'state', 'paid', 'refunded', 'currency', 'token', 'note', 'creator', 'platform', 'item')
  state, paid, refunded, ocur, token, note, creator, platform, item = l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9]
else
  -- The record is the rest of the line `{token} {record}` in the field of the token's ms
  -- (a record holds no space, so `{token} ` matches only at a line's head; checked anyway).
  local rec
  local slot = redis.call('HGET', ck, ARGV[21])
  if slot then
    local s, e = string.find(slot, ARGV[18] .. ' ', 1, true)
    if s and (s == 1 or string.byte(slot, s - 1) == 10) then
      rec = string.sub(slot, e + 1, (string.find(slot, '\n', e + 1, true) or 0) - 1)
    end
  end
  if not rec then rec = redis.call('HGET', ARGV[22], ARGV[18]) end
  if not rec then return {'unknown_click'} end
  -- One match, not a split: `1|ts|note|creator|platform|item|…` (record v1; a split cost
  -- 7 µs per call). Another version or a malformed record is not a click this script knows.
  local ts
  ts, note, creator, platform, item = string.match(rec, '^1|(%d+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)')
  if not ts then return {'unknown_click'} end
  ts = tonumber(ts)
  if not string.find(allowed, ',' .. platform .. ',', 1, true) then return {'platform_not_allowed', platform} end
  -- Merchants often send whole seconds: an order in the click's own second counts.
  if occurred < ts - ts % 1000 or occurred > ts + window then return {'outside_window'} end
end
if want_item ~= '' and want_item ~= item then return {'item_mismatch'} end
token = token or ARGV[18]
paid, refunded, paid_at = paid or '0', refunded or '0', paid_at or ''
-- A refund or cancel of a payment is not dated before it: before the payment's second (or,
-- on a line that does not keep the payment's time, the click's: a v7 token's first 48 bits).
local function before_payment()
  local lo = tonumber(paid_at) or tonumber(string.sub(token, 1, 8) .. string.sub(token, 10, 13), 16)
  return lo ~= nil and occurred < lo - lo % 1000
end
local d_conv, d_ref, d_paid, d_refunded = '0', '0', '0', '0'
if status == 'paid' then
  if state then return {'invalid_transition', state} end
  state, paid, d_conv, d_paid, paid_at = 'paid', ARGV[6], '1', ARGV[6], ARGV[8]
elseif status == 'refunded' then
  if state ~= 'paid' then return {'invalid_transition', state or 'none'} end
  if before_payment() then return {'before_payment'} end
  if ocur ~= cur then return {'currency_mismatch'} end
  local r, p = tonumber(refunded) + amount, tonumber(paid)
  if r > p then return {'refund_exceeds_paid'} end
  refunded, d_ref, d_refunded = string.format('%d', r), '1', ARGV[6]
  if r == p then state = 'refunded' end
else
  if state == 'paid' then
    if before_payment() then return {'before_payment'} end
    local left = tonumber(paid) - tonumber(refunded)
    if left > 0 then d_ref = '1' end
    d_refunded, refunded, cur = string.format('%d', left), paid, ocur
  elseif state then
    return {'invalid_transition', state}
  end
  state = 'cancelled'
end
redis.call('HSET', ok, 'o', table.concat({state, paid, refunded, cur, token, note, creator, platform, item, paid_at}, '|'))
if legacy then
  redis.call('HDEL', ok, 'state', 'paid', 'refunded', 'currency', 'token', 'note', 'creator', 'platform', 'item')
end
local res = table.concat({token, note, creator, platform, item, cur, state, paid, refunded, d_paid, d_refunded}, '|')
redis.call('HSET', ik, 'fp', fp, 'res', res)
redis.call('XADD', ARGV[13], 'MAXLEN', '~', ARGV[14], '*',
  'conversion', table.concat({ARGV[15], ARGV[16], ARGV[17], status, ARGV[20], ARGV[8], ARGV[6], token, ARGV[19]}, '|'),
  'agg', table.concat({day, note, creator, platform, item, cur, d_conv, d_ref, d_paid, d_refunded}, '|'))
return {'ok', res}
"#;

/// The answer to an accepted conversion (`ConversionResult` in `docs/openapi.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Rebuilt from the stored `res` and the report itself.
    Current(Box<ConversionResult>),
    /// The result JSON object as stored by versions that kept JSON in `res`
    /// (a re-delivery of a conversion accepted by such a version), without `duplicate`.
    Stored(String),
}

/// The body of an accepted conversion's answer. Amounts in minor units (fen for CNY).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConversionResult {
    /// The click token the order line is attributed to (a refund's or cancel's is
    /// the payment's, whatever the report carried).
    pub click_token: String,
    /// Merchant id.
    pub merchant_id: String,
    /// `order_id` as sent.
    pub order_id: String,
    /// `sub_order_id` as sent, `""` when none.
    pub sub_order_id: String,
    /// `paid`, `refunded` or `cancelled`.
    pub status: &'static str,
    /// `amount` as sent.
    pub amount: i64,
    /// The event's currency (for a cancel after payment: the payment's).
    pub currency: String,
    /// Note of the click.
    pub note_id: String,
    /// Creator of the click.
    pub creator_id: String,
    /// Platform of the click.
    pub platform: String,
    /// Item of the click, decimal.
    pub item_id: String,
    /// State of the order line after this event.
    pub order_state: String,
    /// Paid amount of the order line.
    pub paid_total: i64,
    /// Refunds (and the reversal of a cancel) of the order line.
    pub refunded_total: i64,
    /// This event's effect on net GMV.
    pub gmv_delta: i64,
    /// `true` when this answers a re-delivery (nothing was counted this time).
    pub duplicate: bool,
}

impl ConversionResult {
    /// Rebuilds the result from a stored `res`
    /// (`{token}|{note}|{creator}|{platform}|{item}|{currency}|{state}|{paid}|{refunded}|{paid_delta}|{refunded_delta}`,
    /// written by the script) and the report it answers. `None` when `res` is malformed.
    pub fn from_stored(res: &str, c: &Conversion, merchant_id: &str, duplicate: bool) -> Option<ConversionResult> {
        let f: Vec<&str> = res.split('|').collect();
        let [token, note, creator, platform, item, currency, state, paid, refunded, d_paid, d_refunded] = f.as_slice()
        else {
            return None;
        };
        let d_paid: i64 = d_paid.parse().ok()?;
        let d_refunded: i64 = d_refunded.parse().ok()?;
        Some(ConversionResult {
            click_token: (*token).to_owned(),
            merchant_id: merchant_id.to_owned(),
            order_id: c.order_id.clone(),
            sub_order_id: c.sub_order_id.clone(),
            status: c.status.as_str(),
            amount: c.amount,
            currency: (*currency).to_owned(),
            note_id: (*note).to_owned(),
            creator_id: (*creator).to_owned(),
            platform: (*platform).to_owned(),
            item_id: (*item).to_owned(),
            order_state: (*state).to_owned(),
            paid_total: paid.parse().ok()?,
            refunded_total: refunded.parse().ok()?,
            gmv_delta: d_paid.checked_sub(d_refunded)?,
            duplicate,
        })
    }
}

/// Counter deltas of one accepted conversion, from the `agg` field of its
/// `ll:conversions` entry: `{day}|{note}|{creator}|{platform}|{item}|{currency}|{conversions}|{refunds}|{paid}|{refunded}`
/// (amounts in minor units, e.g. fen; none of the fields can contain `|`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionDeltas {
    /// Day of the conversion (`YYYY-MM-DD`, configured zone).
    pub day: String,
    /// Note id of the click.
    pub note: String,
    /// Creator id of the click.
    pub creator: String,
    /// Platform of the click.
    pub platform: crate::platform::Platform,
    /// Item id of the click.
    pub item: u64,
    /// ISO 4217 currency of the amounts.
    pub currency: String,
    /// Conversions added (0 or 1).
    pub conversions: i64,
    /// Refunds added (0 or 1).
    pub refunds: i64,
    /// Paid amount added, minor units.
    pub paid: i64,
    /// Refunded amount added, minor units.
    pub refunded: i64,
}

impl ConversionDeltas {
    /// Parses an `agg` field; `None` when malformed.
    pub fn parse(s: &str) -> Option<ConversionDeltas> {
        let f: Vec<&str> = s.split('|').collect();
        let [day, note, creator, platform, item, currency, conv, refunds, paid, refunded] = f.as_slice() else {
            return None;
        };
        Some(ConversionDeltas {
            day: (*day).to_owned(),
            note: (*note).to_owned(),
            creator: (*creator).to_owned(),
            platform: crate::platform::Platform::from_name(platform)?,
            item: item.parse().ok()?,
            currency: (*currency).to_owned(),
            conversions: conv.parse().ok()?,
            refunds: refunds.parse().ok()?,
            paid: paid.parse().ok()?,
            refunded: refunded.parse().ok()?,
        })
    }

    /// `(field, delta)` pairs to add to each dimension's `ll:agg` hash (non-zero only).
    pub fn fields(&self) -> Vec<(String, i64)> {
        [
            ("conversions".to_owned(), self.conversions),
            ("refunds".to_owned(), self.refunds),
            (format!("paid:{}", self.currency), self.paid),
            (format!("refunded:{}", self.currency), self.refunded),
        ]
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .collect()
    }
}

/// The conversion script, prepared once.
pub fn script() -> redis::Script {
    redis::Script::new(SCRIPT)
}

/// Records one conversion atomically. `day` is the conversion's day in the
/// configured zone; `maxlen` caps the conversion stream (approximate); `latest_ms` is
/// the latest `occurred_at` accepted, Unix ms (the server clock plus the callback
/// tolerance: later is [`Outcome::InFuture`], re-deliveries of accepted reports aside).
///
/// Errors: Redis errors (the script either ran entirely or not at all), and a
/// stored result this version cannot read (kind `Client`).
pub async fn record(
    conn: &mut impl ConnectionLike,
    script: &redis::Script,
    c: &Conversion,
    merchant: &Merchant,
    day: &str,
    maxlen: u64,
    latest_ms: u64,
) -> redis::RedisResult<Outcome> {
    let allowed: String = merchant.platforms.iter().fold(String::from(","), |mut s, p| {
        s.push_str(p.as_str());
        s.push(',');
        s
    });
    let idem =
        format!("ll:conv:{}:{}:{}:{}:{}", merchant.id, c.order_id, c.sub_order_id, c.status.as_str(), c.refund_id);
    let order = format!("ll:order:{}:{}:{}", merchant.id, c.order_id, c.sub_order_id);
    // A token that is not a UUID v7 has no record hash: the empty key holds no record.
    let token_ms = uuid::Uuid::try_parse(&c.click_token).ok().and_then(|t| keys::token_ms(&t));
    let (slots, legacy) =
        token_ms.map_or_else(Default::default, |ms| (keys::click_slots(ms / 60_000), keys::click_bucket(ms / 60_000)));
    let mut inv = script.prepare_invoke();
    inv.arg(slots)
        .arg(idem)
        .arg(order)
        .arg(c.fingerprint())
        .arg(c.status.as_str())
        .arg(c.amount)
        .arg(&c.currency)
        .arg(c.occurred_at_ms)
        .arg(merchant.window_ms)
        .arg(allowed)
        .arg(c.item_id.map(|i| i.to_string()).unwrap_or_default())
        .arg(day)
        .arg(CONVERSION_STREAM)
        .arg(maxlen)
        .arg(&merchant.id)
        .arg(&c.order_id)
        .arg(&c.sub_order_id)
        .arg(&c.click_token)
        .arg(&c.raw_status)
        .arg(&c.refund_id)
        .arg(token_ms.unwrap_or_default())
        .arg(legacy)
        .arg(latest_ms)
        .arg(if crate::conversion::has_minor_unit(&c.currency) { "1" } else { "0" });
    let reply: Vec<Value> = inv.invoke_async(conn).await?;
    let text = |i: usize| match reply.get(i) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    let receipt = |duplicate: bool| {
        let res = text(1);
        if res.starts_with('{') {
            return Ok(Receipt::Stored(res));
        }
        ConversionResult::from_stored(&res, c, &merchant.id, duplicate)
            .map(|r| Receipt::Current(Box::new(r)))
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "malformed conversion result", res.clone()))
            })
    };
    Ok(match text(0).as_str() {
        "ok" => Outcome::Attributed(receipt(false)?),
        "dup" => Outcome::Duplicate(receipt(true)?),
        "conflict" => Outcome::Conflict,
        "unknown_click" => Outcome::UnknownClick,
        "platform_not_allowed" => Outcome::PlatformNotAllowed(text(1)),
        "item_mismatch" => Outcome::ItemMismatch,
        "outside_window" => Outcome::OutsideWindow,
        "in_future" => Outcome::InFuture,
        "no_minor_unit" => Outcome::NoMinorUnit,
        "before_payment" => Outcome::BeforePayment,
        "invalid_transition" => Outcome::InvalidTransition(text(1)),
        "refund_exceeds_paid" => Outcome::RefundExceedsPaid,
        "currency_mismatch" => Outcome::CurrencyMismatch,
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected conversion script reply",
                other.to_owned(),
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_parse_and_fields() {
        let d = ConversionDeltas::parse("2026-11-30|65682d4500000000380339a5|c1|tmall|43724784272|CNY|1|0|12500|0")
            .unwrap();
        assert_eq!(d.platform, crate::platform::Platform::Tmall);
        assert_eq!(d.item, 43_724_784_272);
        assert_eq!(d.fields(), vec![("conversions".to_owned(), 1), ("paid:CNY".to_owned(), 12_500)]);
        let refund = ConversionDeltas::parse("2026-11-30|n|c|jd|1|CNY|0|1|0|3000").unwrap();
        assert_eq!(refund.fields(), vec![("refunds".to_owned(), 1), ("refunded:CNY".to_owned(), 3000)]);
        for bad in ["", "2026-11-30|n|c|ebay|1|CNY|1|0|1|0", "2026-11-30|n|c|jd|x|CNY|1|0|1|0", "a|b|c"] {
            assert_eq!(ConversionDeltas::parse(bad), None, "{bad}");
        }
    }
}
