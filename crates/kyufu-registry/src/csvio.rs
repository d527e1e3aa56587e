//! The registry as CSV: a header row, then one resident per row. Columns are found by header name,
//! so their order does not matter; the first eight are required. Errors name the line and column.

use std::io::{Read, Write};
use std::path::Path;

use chrono::NaiveDate;

use crate::{Registry, Relationship, Resident, Sex};

/// Written in this order.
pub const COLUMNS: [&str; 11] = [
    "resident_id",
    "household_id",
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "birth_date",
    "postal_code",
    "sex",
    "relationship",
    "expecting",
];
const REQUIRED: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry file: {0}")]
    Io(#[from] std::io::Error),
    #[error("registry CSV: {0}")]
    Csv(String),
    #[error("registry CSV lacks the required column `{0}`")]
    MissingColumn(&'static str),
    #[error("registry CSV line {line}, column `{column}`: {problem}")]
    BadValue { line: u64, column: &'static str, problem: String },
}

impl Registry {
    /// Writes the registry as CSV.
    pub fn write_csv(&self, out: impl Write) -> Result<(), RegistryError> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(COLUMNS).map_err(|e| RegistryError::Csv(e.to_string()))?;
        for r in self.iter() {
            let birth = r.birth_date.to_string();
            let expecting = r.expecting.map(|d| d.to_string()).unwrap_or_default();
            let sex = match r.sex {
                Sex::F => "F",
                Sex::M => "M",
            };
            w.write_record([
                r.resident_id.as_str(),
                &r.household_id,
                &r.family_name,
                &r.given_name,
                &r.family_name_kana,
                &r.given_name_kana,
                &birth,
                &r.postal_code,
                sex,
                r.relationship.as_str(),
                &expecting,
            ])
            .map_err(|e| RegistryError::Csv(e.to_string()))?;
        }
        w.flush()?;
        Ok(())
    }

    /// Reads a registry from CSV.
    pub fn load_csv(input: impl Read) -> Result<Registry, RegistryError> {
        let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(input);
        let headers = rdr.headers().map_err(|e| RegistryError::Csv(e.to_string()))?.clone();
        let mut pos = [None; COLUMNS.len()];
        for (i, name) in COLUMNS.iter().enumerate() {
            pos[i] = headers.iter().position(|h| h.trim() == *name);
            if i < REQUIRED && pos[i].is_none() {
                return Err(RegistryError::MissingColumn(name));
            }
        }
        let mut residents = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Err(RegistryError::BadValue { line, column: "*", problem: e.to_string() });
                }
            }
            let line = record.position().map_or(0, |p| p.line());
            let field = |i: usize| pos[i].and_then(|p| record.get(p)).map(str::trim).unwrap_or("");
            let bad = |i: usize, problem: &str| RegistryError::BadValue { line, column: COLUMNS[i], problem: problem.to_owned() };
            let date = |i: usize| NaiveDate::parse_from_str(field(i), "%Y-%m-%d").map_err(|_| bad(i, "expected a date YYYY-MM-DD"));
            for i in 0..REQUIRED {
                if field(i).is_empty() {
                    return Err(bad(i, "empty"));
                }
            }
            let rid = field(0);
            if rid.len() != 11 || !rid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(0, "expected 11 digits"));
            }
            let postal = field(7);
            if postal.len() != 7 || !postal.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(7, "expected 7 digits"));
            }
            let sex = match field(8) {
                "F" | "f" => Sex::F,
                "M" | "m" | "" => Sex::M,
                _ => return Err(bad(8, "expected F or M")),
            };
            let relationship = match field(9) {
                "" => Relationship::Other,
                s => Relationship::parse(s).ok_or_else(|| bad(9, "expected head, spouse, child or other"))?,
            };
            let expecting = if field(10).is_empty() { None } else { Some(date(10)?) };
            residents.push(Resident {
                resident_id: rid.to_owned(),
                household_id: field(1).to_owned(),
                family_name: field(2).to_owned(),
                given_name: field(3).to_owned(),
                family_name_kana: field(4).to_owned(),
                given_name_kana: field(5).to_owned(),
                birth_date: date(6)?,
                sex,
                postal_code: postal.to_owned(),
                relationship,
                expecting,
            });
        }
        Ok(Registry::from_residents(residents))
    }

    pub fn load_path(path: &Path) -> Result<Registry, RegistryError> {
        Registry::load_csv(std::io::BufReader::new(std::fs::File::open(path)?))
    }

    /// Writes to `path` through a temporary file, so a crash never leaves half a registry.
    pub fn write_path(&self, path: &Path) -> Result<(), RegistryError> {
        let tmp = path.with_extension("csv.tmp");
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
