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
}

impl Price {
    /// The cost of a call, rounded up to the micro-dollar (a call is never free because it was
    /// small) and saturating at [`Micros::MAX`] instead of overflowing.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> Micros {
        // Both products fit in a u128; only their sum can overflow, and only with absurd inputs.
        let input = u128::from(input_tokens) * u128::from(self.input_per_million);
        let output = u128::from(output_tokens) * u128::from(self.output_per_million);
        let micros = input.saturating_add(output).div_ceil(TOKENS_PER_PRICE_UNIT);
        Micros::try_from(micros).unwrap_or(Micros::MAX)
    }
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

    /// The cost of a call to `model`; 0 when the model has no price.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Micros {
        self.price(model).map_or(0, |price| price.cost(input_tokens, output_tokens))
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
        Price { input_per_million, output_per_million }
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
