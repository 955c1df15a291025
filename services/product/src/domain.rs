//! Valid-by-construction catalog values: a `ProductDraft`, `CategoryDraft` or `PageRequest`
//! exists only once it passed the rules of docs/api.md, so the store never sees bad input.

use souk_shared::Error;
use uuid::Uuid;

// The API's bounds (`souk_contract::api`, which the OpenAPI document states too).
//
// `MAX_STOCK` keeps every sum of stock far inside `i64`: a release adds back at most what
// reservations took from stock, so a product's stock stays below `MAX_STOCK` plus what is held,
// and a cancelled order's release always applies (at 2^63−1, a release overflowed, was
// dead-lettered, and its units stayed held).
pub use souk_contract::api::{
    CATEGORY_NAME_CHARS, DEFAULT_PAGE_SIZE, MAX_DESCRIPTION_CHARS, MAX_PAGE_SIZE, MAX_PRICE_CENTS,
    MAX_STOCK, PRODUCT_NAME_CHARS,
};

/// The most ids one batch read accepts.
pub const MAX_BATCH: usize = 1_000;

/// An id given by a client: malformed is a 400 naming the field.
pub fn parse_id(field: &str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// A trimmed name of `chars` characters without control characters.
fn parse_name(
    field: &str,
    raw: &str,
    chars: std::ops::RangeInclusive<usize>,
) -> Result<String, Error> {
    let name = raw.trim();
    if !chars.contains(&name.chars().count()) {
        return Err(Error::invalid(
            field,
            format!("must be {} to {} characters", chars.start(), chars.end()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// A free text of at most `MAX_DESCRIPTION_CHARS` characters, kept as given (line breaks are
/// fine, other control characters are not).
fn parse_description(raw: &str) -> Result<String, Error> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(
            "description",
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(raw.to_owned())
}

/// A product as an admin creates or replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDraft {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category_id: Option<Uuid>,
}

impl ProductDraft {
    pub fn parse(
        name: &str,
        description: &str,
        price_cents: i64,
        stock: i64,
        category_id: Option<&str>,
    ) -> Result<Self, Error> {
        let name = parse_name("name", name, PRODUCT_NAME_CHARS)?;
        let description = parse_description(description)?;
        if !(0..=MAX_PRICE_CENTS).contains(&price_cents) {
            return Err(Error::invalid(
                "price_cents",
                format!("must be 0 to {MAX_PRICE_CENTS}"),
            ));
        }
        if !(0..=MAX_STOCK).contains(&stock) {
            return Err(Error::invalid("stock", format!("must be 0 to {MAX_STOCK}")));
        }
        let category_id = category_id
            .map(|raw| parse_id("category_id", raw))
            .transpose()?;
        Ok(Self {
            name,
            description,
            price_cents,
            stock,
            category_id,
        })
    }
}

/// A category as an admin creates or renames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryDraft {
    pub name: String,
    pub description: String,
}

impl CategoryDraft {
    pub fn parse(name: &str, description: &str) -> Result<Self, Error> {
        Ok(Self {
            name: parse_name("name", name, CATEGORY_NAME_CHARS)?,
            description: parse_description(description)?,
        })
    }
}

/// One page of a listing: `page` ≥ 1, `page_size` 1..=100. Zero means "not given" (the proto3
/// default) and takes the default; anything else out of range is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: i64,
    pub page_size: i64,
}

impl PageRequest {
    pub fn parse(page: i64, page_size: i64) -> Result<Self, Error> {
        let page = match page {
            0 => 1,
            p if p >= 1 => p,
            _ => return Err(Error::invalid("page", "must be at least 1")),
        };
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            s if (1..=MAX_PAGE_SIZE).contains(&s) => s,
            _ => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be 1 to {MAX_PAGE_SIZE}"),
                ));
            }
        };
        Ok(Self { page, page_size })
    }

    /// Rows to skip. Saturates: a page far past the end is simply empty.
    pub fn offset(self) -> i64 {
        (self.page - 1).saturating_mul(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(name: &str, price: i64, stock: i64) -> Result<ProductDraft, Error> {
        ProductDraft::parse(name, "", price, stock, None)
    }

    fn field(err: Error) -> String {
        match err {
            Error::InvalidField { field, .. } => field,
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn product_names_are_trimmed_and_bounded_in_characters() {
        assert_eq!(draft("  Tea  ", 1, 1).expect("valid").name, "Tea");
        assert!(draft(&"é".repeat(200), 1, 1).is_ok());
        assert_eq!(
            field(draft(&"é".repeat(201), 1, 1).expect_err("long")),
            "name"
        );
        assert_eq!(field(draft("  ", 1, 1).expect_err("blank")), "name");
        assert_eq!(field(draft("T\u{0}ea", 1, 1).expect_err("control")), "name");
    }

    #[test]
    fn prices_and_stock_must_not_be_negative() {
        assert!(draft("Tea", 0, 0).is_ok());
        assert!(draft("Tea", MAX_PRICE_CENTS, MAX_STOCK).is_ok());
        assert_eq!(
            field(draft("Tea", 0, MAX_STOCK + 1).expect_err("stock")),
            "stock"
        );
        assert_eq!(
            field(draft("Tea", 0, i64::MAX).expect_err("stock")),
            "stock"
        );
        assert_eq!(
            field(draft("Tea", -1, 0).expect_err("price")),
            "price_cents"
        );
        assert_eq!(
            field(draft("Tea", MAX_PRICE_CENTS + 1, 0).expect_err("price")),
            "price_cents"
        );
        assert_eq!(field(draft("Tea", 0, -1).expect_err("stock")), "stock");
    }

    #[test]
    fn category_ids_must_be_uuids() {
        let id = Uuid::now_v7();
        let draft = ProductDraft::parse("Tea", "", 1, 1, Some(&id.to_string())).expect("valid");
        assert_eq!(draft.category_id, Some(id));
        let err = ProductDraft::parse("Tea", "", 1, 1, Some("books")).expect_err("malformed");
        assert_eq!(field(err), "category_id");
    }

    #[test]
    fn descriptions_keep_line_breaks_but_are_bounded() {
        assert!(CategoryDraft::parse("Tea", "Green\nand black\ttea").is_ok());
        let long = "d".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert_eq!(
            field(CategoryDraft::parse("Tea", &long).expect_err("long")),
            "description"
        );
        assert_eq!(
            field(CategoryDraft::parse("Tea", "a\u{7}b").expect_err("bell")),
            "description"
        );
        assert_eq!(
            field(CategoryDraft::parse(&"c".repeat(101), "").expect_err("long name")),
            "name"
        );
    }

    #[test]
    fn pages_default_and_are_bounded() {
        assert_eq!(
            PageRequest::parse(0, 0).expect("defaults"),
            PageRequest {
                page: 1,
                page_size: DEFAULT_PAGE_SIZE
            }
        );
        assert_eq!(PageRequest::parse(3, 10).expect("valid").offset(), 20);
        assert_eq!(field(PageRequest::parse(-1, 10).expect_err("page")), "page");
        assert_eq!(
            field(PageRequest::parse(1, 101).expect_err("size")),
            "page_size"
        );
        assert_eq!(
            field(PageRequest::parse(1, -5).expect_err("size")),
            "page_size"
        );
        assert_eq!(
            PageRequest::parse(i64::MAX, 100).expect("valid").offset(),
            i64::MAX
        );
    }
}
