//! Model prices in micro-dollars per million tokens, and what a call costs.

use std::collections::HashMap;
use std::fmt;

/// Micro-dollars: 1 USD = 1 000 000.
pub type Micros = u64;

/// Tokens per pricing unit: prices are per million tokens.
const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// Price of a model, in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: Micros,
    pub output_per_million: Micros,
    /// Input tokens read from the provider's prompt cache; priced as input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<Micros>,
    /// Input tokens written to the provider's prompt cache; priced as input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<Micros>,
}

/// The part of a call's input tokens a provider's prompt cache served (`read`) or stored
/// (`written`), which it bills at other prices than the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheTokens {
    pub read: u64,
    pub written: u64,
}

impl Price {
    /// A price without cache prices: cached input costs what input costs.
    pub const fn new(input_per_million: Micros, output_per_million: Micros) -> Self {
        Self {
            input_per_million,
            output_per_million,
            cache_read_per_million: None,
            cache_write_per_million: None,
        }
    }

    /// The most `input_tokens` and `output_tokens` can cost, whatever share of the input a
    /// prompt cache serves or stores: the input at the highest of its prices. What a request
    /// reserves before its call; without cache prices, simply its cost.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> Micros {
        let input_per_million = self
            .input_per_million
            .max(self.cache_read_per_million.unwrap_or(0))
            .max(self.cache_write_per_million.unwrap_or(0));
        micros([(input_tokens, input_per_million), (output_tokens, self.output_per_million)])
    }

    /// The cost of a call whose `input_tokens` include `cache` (counts beyond the input are
    /// bounded by it), each part at its price. Rounded up to the micro-dollar (a call is never
    /// free because it was small) and saturating at [`Micros::MAX`] instead of overflowing.
    pub fn cost_with_cache(
        &self,
        input_tokens: u64,
        cache: CacheTokens,
        output_tokens: u64,
    ) -> Micros {
        let read = cache.read.min(input_tokens);
        let written = cache.written.min(input_tokens - read);
        let uncached = input_tokens - read - written;
        micros([
            (uncached, self.input_per_million),
            (read, self.cache_read_per_million.unwrap_or(self.input_per_million)),
            (written, self.cache_write_per_million.unwrap_or(self.input_per_million)),
            (output_tokens, self.output_per_million),
        ])
    }
}

/// The sum of `tokens x price per million` over `parts`, in micro-dollars rounded up once.
fn micros<const N: usize>(parts: [(u64, Micros); N]) -> Micros {
    // Each product fits in a u128; only their sum can overflow, and only with absurd inputs.
    let total = parts.into_iter().fold(0u128, |sum, (tokens, price)| {
        sum.saturating_add(u128::from(tokens) * u128::from(price))
    });
    Micros::try_from(total.div_ceil(TOKENS_PER_PRICE_UNIT)).unwrap_or(Micros::MAX)
}

/// The price of each model the relay serves.
///
/// A model missing from the table costs nothing: its calls are still admitted against budgets
/// that have room left, but they never use any up. The relay warns at start-up about served
/// models without a price.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl PriceTable {
    pub fn new(prices: HashMap<String, Price>) -> Self {
        Self { prices }
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
    }

    /// The most a call to `model` with these token counts can cost ([`Price::cost`]); 0 when
    /// the model has no price.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Micros {
        self.price(model).map_or(0, |price| price.cost(input_tokens, output_tokens))
    }

    /// The cost of a call to `model`, its cached input at the cache prices
    /// ([`Price::cost_with_cache`]); 0 when the model has no price.
    pub fn cost_with_cache(
        &self,
        model: &str,
        input_tokens: u64,
        cache: CacheTokens,
        output_tokens: u64,
    ) -> Micros {
        self.price(model)
            .map_or(0, |price| price.cost_with_cache(input_tokens, cache, output_tokens))
    }
}

/// An amount of micro-dollars shown as dollars with two decimals, rounded to the nearest cent:
/// `Usd(5_000_000)` is `$5.00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usd(pub Micros);

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cents = (u128::from(self.0) + 5_000) / 10_000;
        write!(f, "${}.{:02}", cents / 100, cents % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input_per_million: Micros, output_per_million: Micros) -> Price {
        Price::new(input_per_million, output_per_million)
    }

    /// Anthropic's published ratios: cache reads at a tenth of input, writes at 1.25 times.
    fn cached_price() -> Price {
        Price {
            cache_read_per_million: Some(300_000),
            cache_write_per_million: Some(3_750_000),
            ..price(3_000_000, 15_000_000)
        }
    }

    #[test]
    fn cached_input_is_priced_at_the_cache_prices() {
        let cache = CacheTokens { read: 1_000_000, written: 1_000_000 };
        // One million uncached, one read, one written; one million out.
        assert_eq!(
            cached_price().cost_with_cache(3_000_000, cache, 1_000_000),
            3_000_000 + 300_000 + 3_750_000 + 15_000_000
        );
    }

    #[test]
    fn without_cache_prices_cached_input_costs_what_input_costs() {
        let cache = CacheTokens { read: 400, written: 300 };
        let plain = price(1_000_000, 2_000_000);
        assert_eq!(plain.cost_with_cache(1_000, cache, 10), plain.cost(1_000, 10));
        let only_reads = Price { cache_read_per_million: Some(0), ..plain };
        assert_eq!(only_reads.cost_with_cache(1_000, cache, 10), 600 + 20);
    }

    #[test]
    fn cache_counts_beyond_the_input_are_bounded_by_it() {
        let cache = CacheTokens { read: 5_000, written: 5_000 };
        // All 1 000 input tokens read from the cache: none left to be written or uncached.
        assert_eq!(cached_price().cost_with_cache(1_000, cache, 0), 300);
        let cache = CacheTokens { read: 400, written: u64::MAX };
        assert_eq!(cached_price().cost_with_cache(1_000, cache, 0), 120 + 2_250);
    }

    #[test]
    fn the_most_a_call_can_cost_prices_input_at_its_highest_price() {
        // What a request reserves must cover a prompt that is all cache writes.
        assert_eq!(cached_price().cost(1_000_000, 0), 3_750_000);
        let cheap_reads = Price { cache_write_per_million: None, ..cached_price() };
        assert_eq!(cheap_reads.cost(1_000_000, 0), 3_000_000);
    }

    // Prices.

    #[test]
    fn a_million_input_tokens_cost_exactly_the_price_per_million() {
        assert_eq!(price(150_000, 600_000).cost(1_000_000, 0), 150_000);
    }

    #[test]
    fn a_single_token_costs_at_least_one_micro_dollar() {
        assert_eq!(price(150_000, 600_000).cost(1, 0), 1);
        assert_eq!(price(150_000, 600_000).cost(0, 0), 0);
        // The sum is rounded once, not each part: 0.15 + 0.6 rounds up to 1.
        assert_eq!(price(150_000, 600_000).cost(1, 1), 1);
    }

    #[test]
    fn output_tokens_are_priced_separately_from_input_tokens() {
        let price = price(1_000_000, 2_000_000);
        assert_eq!(price.cost(1_000, 0), 1_000);
        assert_eq!(price.cost(0, 1_000), 2_000);
        assert_eq!(price.cost(1_000, 1_000), 3_000);
    }

    #[test]
    fn huge_token_counts_saturate_instead_of_overflowing() {
        assert_eq!(price(1_000_000, 0).cost(u64::MAX, 0), u64::MAX);
        assert_eq!(price(1_000_000, 1_000_000).cost(u64::MAX, 1), u64::MAX);
        assert_eq!(price(u64::MAX, u64::MAX).cost(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_model_missing_from_the_price_table_costs_nothing() {
        let table = PriceTable::new(HashMap::from([("priced".to_owned(), price(150_000, 0))]));
        assert_eq!(table.cost("priced", 2_000_000, 5), 300_000);
        assert_eq!(table.price("unpriced"), None);
        assert_eq!(table.cost("unpriced", 2_000_000, 5), 0);
    }

    #[test]
    fn a_price_reads_from_config_and_rejects_unknown_fields() {
        let parsed: Price =
            serde_json::from_str(r#"{"input_per_million":150000,"output_per_million":600000}"#)
                .unwrap();
        assert_eq!(parsed, price(150_000, 600_000));
        let cached: Price = serde_json::from_str(
            r#"{"input_per_million":3000000,"output_per_million":15000000,
                "cache_read_per_million":300000,"cache_write_per_million":3750000}"#,
        )
        .unwrap();
        assert_eq!(cached, cached_price());
        let typo = r#"{"input_per_million":1,"output_per_million":2,"cached_per_million":3}"#;
        assert!(serde_json::from_str::<Price>(typo).is_err());
    }

    #[test]
    fn dollars_are_shown_with_two_decimals_rounded_to_the_cent() {
        assert_eq!(Usd(5_000_000).to_string(), "$5.00");
        assert_eq!(Usd(0).to_string(), "$0.00");
        assert_eq!(Usd(1_234_567).to_string(), "$1.23");
        assert_eq!(Usd(1_235_000).to_string(), "$1.24");
        assert_eq!(Usd(50_000).to_string(), "$0.05");
        assert_eq!(Usd(u64::MAX).to_string(), "$18446744073709.55");
    }
}
