//! List page sizes (AIP-158): 0 means the default, large values are capped.

use super::ValidationError;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub fn parse(raw: i32) -> Result<Self, ValidationError> {
        match raw {
            n if n < 0 => Err(ValidationError::new("must not be negative")),
            0 => Ok(Self(DEFAULT_PAGE_SIZE)),
            n => Ok(Self((n as u32).min(MAX_PAGE_SIZE))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_caps() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(7).unwrap().get(), 7);
        assert_eq!(PageSize::parse(1000).unwrap().get(), 100);
        assert!(PageSize::parse(-1).is_err());
    }
}
