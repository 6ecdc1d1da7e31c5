//! Exact decimal arithmetic as shopspring/decimal does it, for Sprig's
//! float functions.

#[derive(Clone, Copy)]
pub(super) enum DecOp {
    Add,
    Add1,
    Sub,
    Mul,
    Div,
}

/// A decimal `mantissa × 10^exponent`, exact.
#[derive(Clone, Copy)]
pub(super) struct Decimal {
    pub(super) mantissa: i128,
    exponent: i32,
}

impl Decimal {
    /// decimal.NewFromFloat: the shortest decimal that reads back as `f`.
    pub(super) fn from_f64(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        let sci = format!("{f:e}");
        let (digits, exp) = sci.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let negative = digits.starts_with('-');
        let digits = digits.trim_start_matches('-');
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
        Some(Self { mantissa: if negative { -mantissa } else { mantissa }, exponent: exp - frac.len() as i32 })
    }

    pub(super) fn to_f64(self) -> f64 {
        format!("{}e{}", self.mantissa, self.exponent).parse().unwrap_or(f64::NAN)
    }

    /// Both with the smaller exponent.
    fn aligned(self, other: Self) -> Option<(i128, i128, i32)> {
        let exponent = self.exponent.min(other.exponent);
        let scale = |d: Self| 10i128.checked_pow(u32::try_from(d.exponent - exponent).ok()?)?.checked_mul(d.mantissa);
        Some((scale(self)?, scale(other)?, exponent))
    }

    pub(super) fn apply(self, op: DecOp, other: Self) -> Option<Self> {
        match op {
            DecOp::Add | DecOp::Add1 => {
                let (a, b, exponent) = self.aligned(other)?;
                Some(Self { mantissa: a.checked_add(b)?, exponent })
            }
            DecOp::Sub => {
                let (a, b, exponent) = self.aligned(other)?;
                Some(Self { mantissa: a.checked_sub(b)?, exponent })
            }
            DecOp::Mul => Some(Self {
                mantissa: self.mantissa.checked_mul(other.mantissa)?,
                exponent: self.exponent.checked_add(other.exponent)?,
            }),
            // DivRound to 16 places, half away from zero.
            DecOp::Div => {
                if other.mantissa == 0 {
                    return None;
                }
                let shift = self.exponent - other.exponent + 17;
                let (num, den) = if shift >= 0 {
                    (self.mantissa.checked_mul(10i128.checked_pow(shift as u32)?)?, other.mantissa)
                } else {
                    (self.mantissa, other.mantissa.checked_mul(10i128.checked_pow((-shift) as u32)?)?)
                };
                let q = num / den; // 17 places, truncated
                let rounded = (q + q.signum() * 5) / 10;
                Some(Self { mantissa: rounded, exponent: -16 })
            }
        }
    }
}
