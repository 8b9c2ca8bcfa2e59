use super::*;

/// A small descriptor written by hand: |x| clipped to [-10, 10] as two linear pieces, plus
/// a quadratic piece from 5 on.
fn sample() -> Descriptor {
    Descriptor {
        format: FORMAT.to_string(),
        name: "abs-test".to_string(),
        version: 1,
        function: "|x| below 5, x^2 - 20 from 5".to_string(),
        source: "test".to_string(),
        generator: "hand".to_string(),
        params: BTreeMap::new(),
        input: InputDomain {
            scale_bits: 0,
            min: -10,
            max: 10,
        },
        output_scale_bits: 0,
        cuts: vec![-10, 0, 5],
        polys: vec![vec![0, -1], vec![0, 1], vec![-20, 0, 1]],
        predicates: vec![Predicate::Msb, Predicate::Lt { beta: 3 }],
        error: ErrorBound {
            metric: ErrorMetric::Abs,
            over: [-10.0, 10.0],
            max: 0.0,
            reference: "itself".to_string(),
        },
    }
}

fn invalid(mutate: impl FnOnce(&mut Descriptor)) -> String {
    let mut d = sample();
    mutate(&mut d);
    let text = serde_json::to_string(&d).unwrap();
    Descriptor::from_json(&text).unwrap_err().to_string()
}

#[test]
fn eval_picks_the_interval_and_clamps() {
    let d = sample();
    assert_eq!(d.eval(-3), 3);
    assert_eq!(d.eval(0), 0);
    assert_eq!(d.eval(4), 4);
    assert_eq!(d.eval(5), 5);
    assert_eq!(d.eval(7), 29);
    // Clamped to [-10, 10] first.
    assert_eq!(d.eval(-1000), 10);
    assert_eq!(d.eval(i64::MAX), 80);
    assert_eq!(d.piece(-10), 0);
    assert_eq!(d.piece(-1), 0);
    assert_eq!(d.piece(0), 1);
    assert_eq!(d.piece(100), 2);
}

#[test]
fn eval_wraps_instead_of_overflowing() {
    let mut d = sample();
    d.input = InputDomain {
        scale_bits: 0,
        min: i64::MIN,
        max: i64::MAX,
    };
    d.cuts = vec![i64::MIN];
    d.polys = vec![vec![1, 0, 1]];
    assert_eq!(d.eval(1 << 32), 1);
    assert_eq!(d.eval(i64::MIN), 1);
}

#[test]
fn eval_bits_in_declaration_order() {
    let d = sample();
    assert_eq!(d.eval_bits(-1), vec![true, true]);
    assert_eq!(d.eval_bits(2), vec![false, true]);
    assert_eq!(d.eval_bits(3), vec![false, false]);
}

#[test]
fn json_round_trip() {
    let d = sample();
    let text = d.to_json_pretty();
    assert!(
        text.starts_with("{\n  \"format\": \"suf-descriptor/1\",\n  \"name\": \"abs-test\""),
        "{text}"
    );
    assert!(
        text.contains("\"predicates\": [\n    {\n      \"kind\": \"msb\"\n    },"),
        "{text}"
    );
    assert!(
        text.contains("{\n      \"kind\": \"lt\",\n      \"beta\": 3\n    }"),
        "{text}"
    );
    assert_eq!(Descriptor::from_json(&text).unwrap(), d);
    // Optional fields may be left out.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("predicates");
    let d2 = Descriptor::from_json(&v.to_string()).unwrap();
    assert!(d2.predicates.is_empty());
}

#[test]
fn long_arrays_are_packed_into_lines() {
    let mut d = sample();
    d.input.max = 999;
    d.cuts = (-10..1000).collect();
    d.polys = d.cuts.iter().map(|&c| vec![c, 1]).collect();
    let text = d.to_json_pretty();
    assert!(text.lines().count() < 300, "{} lines", text.lines().count());
    assert!(
        text.lines().all(|l| l.len() <= 100),
        "a line is over 100 columns"
    );
    assert_eq!(Descriptor::from_json(&text).unwrap(), d);
}

#[test]
fn merge_keeps_the_function() {
    let mut d = sample();
    d.cuts = vec![-10, -5, 0, 1, 2, 5];
    d.polys = vec![vec![7], vec![7], vec![0, 1], vec![0, 1], vec![7], vec![7]];
    let before: Vec<i64> = (-12..12).map(|x| d.eval(x)).collect();
    d.merge_equal_pieces();
    assert_eq!(d.cuts, vec![-10, 0, 2]);
    let after: Vec<i64> = (-12..12).map(|x| d.eval(x)).collect();
    assert_eq!(before, after);
}

#[test]
fn validation_names_the_descriptor_and_field() {
    let e = invalid(|d| d.format = "suf-descriptor/2".into());
    assert_eq!(
        e,
        "descriptor `abs-test`: field `format`: is `suf-descriptor/2`, this reader understands `suf-descriptor/1`"
    );
    let e = invalid(|d| d.cuts = vec![-10, 5, 0]);
    assert!(
        e.contains("`abs-test`: field `cuts`: not strictly ascending: cuts[1] = 5 >= cuts[2] = 0"),
        "{e}"
    );
    let e = invalid(|d| d.cuts = vec![-10, 0, 0]);
    assert!(e.contains("not strictly ascending"), "{e}");
    let e = invalid(|d| d.polys.pop().map(|_| ()).unwrap_or(()));
    assert!(
        e.contains("field `polys`: has 2 polynomials for 3 cuts"),
        "{e}"
    );
    let e = invalid(|d| {
        d.cuts.clear();
        d.polys.clear();
    });
    assert!(e.contains("field `cuts`: is empty"), "{e}");
    let e = invalid(|d| d.cuts[0] = -9);
    assert!(e.contains("cuts[0] = -9 must equal input.min = -10"), "{e}");
    let e = invalid(|d| d.cuts[2] = 11);
    assert!(e.contains("last cut 11 is above input.max = 10"), "{e}");
    let e = invalid(|d| d.input.min = 11);
    assert!(e.contains("field `input`: min 11 > max 10"), "{e}");
    let e = invalid(|d| d.polys[1].clear());
    assert!(e.contains("polys[1] is empty"), "{e}");
    let e = invalid(|d| d.error.max = -1.0);
    assert!(e.contains("field `error.max`"), "{e}");
    let e = invalid(|d| d.error.over = [1.0, 0.0]);
    assert!(e.contains("field `error.over`"), "{e}");
    let e = invalid(|d| d.name = " ".into());
    assert!(e.contains("field `name`: is empty"), "{e}");
}

#[test]
fn malformed_json_is_a_clear_error() {
    let e = Descriptor::from_json("{\"format\": 1}")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("descriptor is not valid JSON for format suf-descriptor/1"),
        "{e}"
    );
    let mut v = serde_json::to_value(sample()).unwrap();
    v["typo_field"] = 1.into();
    let e = Descriptor::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `typo_field`"), "{e}");
    let mut v = serde_json::to_value(sample()).unwrap();
    v["predicates"] = serde_json::json!([{"kind": "sign"}]);
    let e = Descriptor::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sign"), "{e}");
}
