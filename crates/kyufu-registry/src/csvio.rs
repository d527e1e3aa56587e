//! The registry as CSV: a header row, then one resident per row. The writer always writes
//! [`COLUMNS`] in that order; the loader finds columns by header name, so their order does not
//! matter and unknown columns are ignored. The first eight columns are required; without
//! `postal_code` residents get an empty postal code, without `relationship` they are `other`,
//! without `expecting` no one is expecting. A bad row is refused with an error naming its line and
//! column (never the value, which may be personal data); nothing panics on bad input.

use std::io::{Read, Write};
use std::path::Path;

use chrono::NaiveDate;
use kyufu_domain::normalize::is_kana_name;

use crate::registry::{parse_resident_id, stored_kana};
use crate::{Registry, Relationship, Resident, Sex};

/// The columns, in the order the writer writes them.
pub const COLUMNS: [&str; 11] = [
    "resident_id",
    "household_id",
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "birth_date",
    "sex",
    "postal_code",
    "relationship",
    "expecting",
];

/// The columns a registry CSV must have: the first eight of [`COLUMNS`].
pub const REQUIRED_COLUMNS: [&str; 8] =
    ["resident_id", "household_id", "family_name", "given_name", "family_name_kana", "given_name_kana", "birth_date", "sex"];

const RESIDENT_ID: usize = 0;
const HOUSEHOLD_ID: usize = 1;
const FAMILY_NAME: usize = 2;
const GIVEN_NAME: usize = 3;
const FAMILY_NAME_KANA: usize = 4;
const GIVEN_NAME_KANA: usize = 5;
const BIRTH_DATE: usize = 6;
const SEX: usize = 7;
const POSTAL_CODE: usize = 8;
const RELATIONSHIP: usize = 9;
const EXPECTING: usize = 10;

/// Why a registry could not be loaded or built. All of them are for the operator: the registry
/// file (or the code building one) must be fixed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry file: {0}")]
    Io(#[from] std::io::Error),
    /// Not readable as CSV: a row with another number of fields than the header, bad UTF-8.
    #[error("registry CSV{}: {message}", at_line(*.line))]
    Csv { line: Option<u64>, message: String },
    #[error("registry CSV line 1: the required column `{column}` is missing")]
    MissingColumn { column: &'static str },
    #[error("registry CSV line 1: the column `{column}` appears more than once")]
    DuplicateColumn { column: &'static str },
    #[error("registry CSV line {line}, column `{column}`: {problem}")]
    BadValue { line: u64, column: &'static str, problem: &'static str },
    #[error("registry CSV line {line}, column `resident_id`: the resident id is already used on line {first_line}")]
    DuplicateIdOnLine { line: u64, first_line: u64 },
    /// From [`Registry::from_residents`]: `index` is the position in the given residents.
    #[error("resident {index}: the resident id is not eleven ASCII digits")]
    InvalidResidentId { index: usize },
    #[error("resident {index}: the resident id is already used by resident {first_index}")]
    DuplicateResidentId { index: usize, first_index: usize },
    #[error("{residents} residents are more than a registry can index")]
    TooLarge { residents: usize },
}

fn at_line(line: Option<u64>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

impl Registry {
    /// Writes a header row and one row per resident, in registry order, `\n` line ends. The same
    /// registry always gives the same bytes.
    pub fn write_csv(&self, out: impl Write) -> Result<(), RegistryError> {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(out);
        let csv_err = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(io) => RegistryError::Io(io),
            other => RegistryError::Csv { line: None, message: format!("{other:?}") },
        };
        w.write_record(COLUMNS).map_err(csv_err)?;
        let mut birth = String::with_capacity(10);
        let mut expecting = String::with_capacity(10);
        for r in self.iter() {
            birth.clear();
            expecting.clear();
            use std::fmt::Write as _;
            let _ = write!(birth, "{}", r.birth_date.format("%Y-%m-%d"));
            if let Some(due) = r.expecting {
                let _ = write!(expecting, "{}", due.format("%Y-%m-%d"));
            }
            w.write_record([
                r.resident_id.as_str(),
                &r.household_id,
                &r.family_name,
                &r.given_name,
                &r.family_name_kana,
                &r.given_name_kana,
                &birth,
                r.sex.as_str(),
                &r.postal_code,
                r.relationship.as_str(),
                &expecting,
            ])
            .map_err(csv_err)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Reads a registry written by [`Registry::write_csv`] or by hand (see the module
    /// documentation for what is accepted). Kana may be hiragana or half-width; it is stored as
    /// normalised katakana.
    pub fn load_csv(input: impl Read) -> Result<Registry, RegistryError> {
        load(input, 0)
    }

    /// [`Registry::load_csv`] from a file.
    pub fn load_path(path: &Path) -> Result<Registry, RegistryError> {
        let file = std::fs::File::open(path)?;
        // Generated rows are about 85 bytes. Reserving a little too much costs only address space
        // (untouched pages); too little costs a copy of the whole Vec while it grows.
        let hint = file.metadata().map_or(0, |m| usize::try_from(m.len() / 70).unwrap_or(0));
        load(file, hint)
    }

    /// Writes to `path` through a temporary file next to it, then renames, so a crash never leaves
    /// half a registry.
    pub fn write_path(&self, path: &Path) -> Result<(), RegistryError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            self.write_csv(&mut f)?;
            f.flush()?;
            f.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

fn csv_error(e: csv::Error) -> RegistryError {
    let line = e.position().map(|p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => RegistryError::Io(io),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            RegistryError::Csv { line, message: format!("{len} fields, but the header has {expected_len}") }
        }
        csv::ErrorKind::Utf8 { .. } => RegistryError::Csv { line, message: "not valid UTF-8".to_owned() },
        other => RegistryError::Csv { line, message: format!("{other:?}") },
    }
}

fn load(input: impl Read, capacity_hint: usize) -> Result<Registry, RegistryError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(input);
    let headers = rdr.headers().map_err(csv_error)?;
    let mut at: [Option<usize>; COLUMNS.len()] = [None; COLUMNS.len()];
    for (i, header) in headers.iter().enumerate() {
        let name = header.trim_start_matches('\u{FEFF}').trim();
        if let Some(c) = COLUMNS.iter().position(|col| *col == name) {
            if at[c].is_some() {
                return Err(RegistryError::DuplicateColumn { column: COLUMNS[c] });
            }
            at[c] = Some(i);
        }
    }
    if let Some(missing) = REQUIRED_COLUMNS.iter().zip(&at).find(|(_, p)| p.is_none()) {
        return Err(RegistryError::MissingColumn { column: missing.0 });
    }
    let mut residents = Vec::with_capacity(capacity_hint);
    let mut lines = Vec::with_capacity(capacity_hint);
    let mut record = csv::StringRecord::new();
    while rdr.read_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, |p| p.line());
        residents.push(parse_row(&record, &at, line)?);
        lines.push(line);
    }
    let line_of = |i: usize| lines.get(i).copied().unwrap_or(0);
    match Registry::from_residents(residents) {
        Ok(r) => Ok(r),
        Err(RegistryError::DuplicateResidentId { index, first_index }) => {
            Err(RegistryError::DuplicateIdOnLine { line: line_of(index), first_line: line_of(first_index) })
        }
        Err(RegistryError::InvalidResidentId { index }) => {
            Err(RegistryError::BadValue { line: line_of(index), column: COLUMNS[RESIDENT_ID], problem: "must be 11 digits" })
        }
        Err(e) => Err(e),
    }
}

fn parse_row(record: &csv::StringRecord, at: &[Option<usize>; COLUMNS.len()], line: u64) -> Result<Resident, RegistryError> {
    let field = |c: usize| at[c].and_then(|i| record.get(i)).map_or("", str::trim);
    let bad = |c: usize, problem: &'static str| RegistryError::BadValue { line, column: COLUMNS[c], problem };
    let non_empty = |c: usize| match field(c) {
        "" => Err(bad(c, "must not be empty")),
        s => Ok(s.to_owned()),
    };
    let kana = |c: usize| {
        let stored = stored_kana(field(c));
        if stored.is_empty() {
            Err(bad(c, "must not be empty"))
        } else if is_kana_name(&stored) {
            Ok(stored)
        } else {
            Err(bad(c, "must be kana (katakana or hiragana)"))
        }
    };
    let resident_id = field(RESIDENT_ID);
    if parse_resident_id(resident_id).is_none() {
        return Err(bad(RESIDENT_ID, "must be 11 digits"));
    }
    let birth_date = parse_iso_date(field(BIRTH_DATE)).ok_or_else(|| bad(BIRTH_DATE, "must be a date YYYY-MM-DD"))?;
    let sex = Sex::parse(field(SEX)).ok_or_else(|| bad(SEX, "must be F or M"))?;
    let postal_code = match (at[POSTAL_CODE], field(POSTAL_CODE)) {
        (None, _) => String::new(),
        (Some(_), p) if p.len() == 7 && p.bytes().all(|b| b.is_ascii_digit()) => p.to_owned(),
        (Some(_), _) => return Err(bad(POSTAL_CODE, "must be 7 digits")),
    };
    let relationship = match (at[RELATIONSHIP], field(RELATIONSHIP)) {
        (None, _) => Relationship::Other,
        (Some(_), s) => Relationship::parse(s).ok_or_else(|| bad(RELATIONSHIP, "must be head, spouse, child or other"))?,
    };
    let expecting = match field(EXPECTING) {
        "" => None,
        s => Some(parse_iso_date(s).ok_or_else(|| bad(EXPECTING, "must be empty or a date YYYY-MM-DD"))?),
    };
    Ok(Resident {
        resident_id: resident_id.to_owned(),
        household_id: non_empty(HOUSEHOLD_ID)?,
        family_name: non_empty(FAMILY_NAME)?,
        given_name: non_empty(GIVEN_NAME)?,
        family_name_kana: kana(FAMILY_NAME_KANA)?,
        given_name_kana: kana(GIVEN_NAME_KANA)?,
        birth_date,
        sex,
        postal_code,
        relationship,
        expecting,
    })
}

/// Exactly `YYYY-MM-DD`, a real calendar date.
fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let year = i32::try_from(number(&b[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&b[5..7])?, number(&b[8..10])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_columns_are_the_first_eight() {
        assert_eq!(&COLUMNS[..REQUIRED_COLUMNS.len()], &REQUIRED_COLUMNS[..]);
        assert_eq!(REQUIRED_COLUMNS.len(), 8);
    }

    #[test]
    fn iso_dates_only() {
        assert_eq!(parse_iso_date("2019-04-01"), NaiveDate::from_ymd_opt(2019, 4, 1));
        assert_eq!(parse_iso_date("2024-02-29"), NaiveDate::from_ymd_opt(2024, 2, 29));
        for bad in ["", "2019-4-1", "2019/04/01", "20190401", "2019-02-30", "2019-13-01", "２０１９-04-01", "2019-04-01 ", "+019-04-01", "2019-0a-01"] {
            assert_eq!(parse_iso_date(bad), None, "{bad}");
        }
    }
}
