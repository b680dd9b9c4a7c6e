//! Data as users have it: `xt data import` over the real CSI 300 CSV files, and files that
//! pandas and pyarrow wrote (a long table partitioned by year, Feather per symbol), each
//! giving the bars and the batch results of the per-symbol CSV files.

mod support;

use std::path::Path;

use support::{out_dir, peers_python, xt};
use xt_shared::spec::DataSpec;
use xt_shared::{BarSource, CsvDir};

fn csi300() -> Option<std::path::PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cn-csi300");
    if data.is_dir() {
        Some(data)
    } else {
        eprintln!("skipping: ../shared/data/cn-csi300 (real data beside the checkout) is absent");
        None
    }
}

/// The metrics table of `xt local` with MACD over 2019-2020's point-in-time members.
fn metrics(data: &Path, universe: &Path, name: &str) -> Vec<arrow::record_batch::RecordBatch> {
    let out = out_dir(name);
    let o = xt(&[
        "local",
        "--data",
        data.to_str().unwrap(),
        "--universe",
        universe.to_str().unwrap(),
        "--strategy",
        "macd",
        "--start",
        "2019-01-01",
        "--end",
        "2020-12-31",
        "--tables",
        "metrics,portfolio",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut all = Vec::new();
    for table in ["metrics", "portfolio"] {
        let f = std::fs::File::open(out.join(format!("{table}.parquet"))).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        all.extend(r.map(Result::unwrap));
    }
    all
}

#[test]
fn importing_the_csi300_csv_files_keeps_every_bar_and_every_result() {
    let Some(data) = csi300() else { return };
    let dst = out_dir("import-csi300");
    let o = xt(&[
        "data",
        "import",
        data.to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let csv = CsvDir::open(&data).unwrap();
    let symbols: Vec<String> = csv
        .symbols()
        .unwrap()
        .into_iter()
        .filter(|s| !s.starts_with("universe"))
        .collect();
    assert!(
        stdout.contains(&format!("imported {} symbols", symbols.len())),
        "{stdout}"
    );
    // Files whose bars are all valid come through bar for bar; the report lists the rows
    // of the others, and no more.
    let imported = xt_shared::open::open_source(&DataSpec::Dir(dst.clone())).unwrap();
    let report = std::fs::read_to_string(dst.join(xt_api::import::REPORT)).unwrap_or_default();
    for s in &symbols {
        match csv.load(s) {
            Ok(bars) => assert_eq!(imported.load(s).unwrap(), bars, "{s}"),
            Err(e) => assert!(report.contains(&format!("{s}.csv,")), "{s}: {e}"),
        }
    }
    for universe in ["universe.csv", "universe_pit.csv"] {
        assert_eq!(
            std::fs::read(dst.join(universe)).unwrap(),
            std::fs::read(data.join(universe)).unwrap()
        );
    }
    let universe = data.join("universe_pit.csv");
    assert_eq!(
        metrics(&data, &universe, "import-csi300-csv"),
        metrics(&dst, &universe, "import-csi300-parquet"),
        "the imported files give the batch of the CSV files"
    );
}

#[test]
fn files_pandas_and_pyarrow_write_read_as_the_csv_files() {
    let Some(data) = csi300() else { return };
    let Some(python) = peers_python("pandas, pyarrow") else {
        return;
    };
    let root = out_dir("pandas-layouts");
    std::fs::create_dir_all(&root).unwrap();
    // As a user exports them: Tushare's column names and YYYYMMDD dates in a long table
    // partitioned by year; Feather files (LZ4, pyarrow's default) per symbol.
    let script = r#"
import sys, glob, os
import pandas as pd
src, root = sys.argv[1], sys.argv[2]
frames = []
os.makedirs(f"{root}/feather", exist_ok=True)
for path in sorted(glob.glob(f"{src}/6000*.csv"))[:12]:
    sym = os.path.basename(path)[:-4]
    df = pd.read_csv(path)
    df.to_feather(f"{root}/feather/{sym}.feather")
    df = df.rename(columns={"date": "trade_date", "volume": "vol"})
    df.insert(0, "ts_code", sym)
    df["year"] = df["trade_date"].str[:4]
    df["trade_date"] = df["trade_date"].str.replace("-", "")
    frames.append(df)
pd.concat(frames).to_parquet(f"{root}/long", partition_cols=["year"])
print(len(frames))
"#;
    let o = std::process::Command::new(&python)
        .args(["-c", script, data.to_str().unwrap(), root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(n, 12);
    let csv = CsvDir::open(&data).unwrap();
    for layout in ["long", "feather"] {
        let source = xt_shared::open::open_source(&DataSpec::Dir(root.join(layout))).unwrap();
        let symbols = source.symbols().unwrap();
        assert_eq!(symbols.len(), 12, "{layout}");
        for s in &symbols {
            assert_eq!(
                source.read(s).unwrap(),
                csv.read(s).unwrap(),
                "{layout} {s}"
            );
        }
    }
}
