//! Runs the table-driven specifications in `maps/testdata/`: `dp.txt` for
//! the DP map and `rg.txt` for the RG map. Each file's header explains its
//! commands. A malformed line, a failed expectation, or a case without a
//! comment saying why fails the test with the file's name and line number.

use std::collections::BTreeSet;
use std::path::Path;

use maps::{BrickId, DpMap, MapError, PartitionId, RgEntry, RgId, RgMap};

/// Runs a script and returns the first problem as `name:line: text: why`.
fn run(
    name: &str,
    text: &str,
    mut step: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), String> {
    let mut comment_before = false;
    let mut saw_case = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() {
            comment_before = false;
            continue;
        }
        if line.starts_with('#') {
            comment_before = true;
            continue;
        }
        let fail = |why: String| format!("{name}:{line_no}: {line}\n    {why}");
        let starts_case = line.starts_with("uniform ") || line == "new";
        if starts_case && !comment_before {
            return Err(fail(
                "a case must start with a comment line saying why".to_string(),
            ));
        }
        if !starts_case && !saw_case {
            return Err(fail("the first command must start a case".to_string()));
        }
        saw_case |= starts_case;
        step(line).map_err(fail)?;
        comment_before = false;
    }
    if !saw_case {
        return Err(format!("{name}: no cases"));
    }
    Ok(())
}

/// Splits `command -> expectation`.
fn split_expectation(line: &str) -> (&str, Option<&str>) {
    match line.split_once("->") {
        Some((command, expected)) => (command.trim(), Some(expected.trim())),
        None => (line, None),
    }
}

/// Compares an error with an `error: TEXT` expectation, or a success with
/// `None` or another expectation the caller checks.
fn expect_error<T: std::fmt::Debug>(
    result: &Result<T, MapError>,
    expected: Option<&str>,
) -> Result<bool, String> {
    match (result, expected.and_then(|e| e.strip_prefix("error:"))) {
        (Err(e), Some(text)) => {
            let text = text.trim();
            if e.to_string().contains(text) {
                Ok(true)
            } else {
                Err(format!(
                    "error {e:?} says \"{e}\", expected it to contain \"{text}\""
                ))
            }
        }
        (Err(e), None) => Err(format!("unexpected error: {e}")),
        (Ok(value), Some(text)) => {
            Err(format!("expected error \"{}\", got {value:?}", text.trim()))
        }
        (Ok(_), None) => Ok(false),
    }
}

/// `rg=7` style argument.
fn arg<'a>(token: Option<&'a str>, key: &str) -> Result<&'a str, String> {
    let token = token.ok_or_else(|| format!("missing {key}=..."))?;
    token
        .strip_prefix(key)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or_else(|| format!("expected {key}=..., found {token:?}"))
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number"))
}

fn no_more<'a>(mut tokens: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match tokens.next() {
        Some(extra) => Err(format!("unexpected {extra:?}")),
        None => Ok(()),
    }
}

// ---- DP map ----

/// A leaf written as its bits, deepest on the left; `b{n}` repeats `b`.
fn parse_leaf(text: &str) -> Result<PartitionId, String> {
    if text == "root" {
        return Ok(PartitionId::ROOT);
    }
    let mut bits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '0' && c != '1' {
            return Err(format!("leaf {text:?}: {c:?} is not a bit"));
        }
        let mut repeat = 1usize;
        if chars.peek() == Some(&'{') {
            chars.next();
            let digits: String = chars.by_ref().take_while(|&d| d != '}').collect();
            repeat = number(&digits)?;
        }
        if bits.len() + repeat > PartitionId::DEPTH_MAX as usize {
            return Err(format!(
                "leaf {text:?} is deeper than {}",
                PartitionId::DEPTH_MAX
            ));
        }
        bits.extend(std::iter::repeat_n(c, repeat));
    }
    if bits.is_empty() {
        return Err(format!("leaf {text:?} has no bits"));
    }
    let prefix = u64::from_str_radix(&bits, 2).map_err(|e| format!("leaf {text:?}: {e}"))?;
    Ok(PartitionId::new(bits.len() as u32, prefix))
}

fn leaf_name(leaf: PartitionId) -> String {
    match leaf.depth() {
        Some(0) => "root".to_string(),
        Some(depth) => format!("{:0width$b}", leaf.prefix(), width = depth as usize),
        None => "invalid".to_string(),
    }
}

fn parse_rg(text: &str) -> Result<RgId, String> {
    text.strip_prefix("rg")
        .ok_or_else(|| format!("expected rgN, found {text:?}"))
        .and_then(number)
        .map(RgId)
}

/// The hashes a `lookup` line stands for: one, or for `0b...BITS` three
/// with different high bits, since the leaf must not depend on them.
fn parse_hashes(text: &str) -> Result<Vec<u64>, String> {
    let text = text.replace('_', "");
    if let Some(bits) = text.strip_prefix("0b...") {
        let low = u64::from_str_radix(bits, 2).map_err(|e| format!("{text:?}: {e}"))?;
        if bits.is_empty() || bits.len() >= 64 {
            return Err(format!("{text:?}: give 1 to 63 low bits"));
        }
        let high_mask = !((1u64 << bits.len()) - 1);
        return Ok([0, u64::MAX, 0xa5a5_5a5a_c3c3_3c3c]
            .iter()
            .map(|fill| (fill & high_mask) | low)
            .collect());
    }
    let hash = if let Some(hex) = text.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else if let Some(bin) = text.strip_prefix("0b") {
        u64::from_str_radix(bin, 2)
    } else {
        text.parse()
    };
    hash.map(|h| vec![h])
        .map_err(|e| format!("{text:?} is not a hash: {e}"))
}

fn dp_step(map: &mut Option<DpMap>, line: &str) -> Result<(), String> {
    // `leaves:` pairs contain "->" themselves, so they are read whole.
    if let Some(pairs) = line.strip_prefix("leaves:") {
        let map = map
            .as_ref()
            .ok_or("no map: start the case with uniform N")?;
        let mut want = BTreeSet::new();
        for pair in pairs.split_whitespace() {
            let (leaf, rg) = pair
                .split_once("->")
                .ok_or_else(|| format!("{pair:?} is not LEAF->rgN"))?;
            if !want.insert((parse_leaf(leaf)?, parse_rg(rg)?)) {
                return Err(format!("{pair} is listed twice"));
            }
        }
        let got: BTreeSet<(PartitionId, RgId)> = map.leaves().collect();
        if want != got {
            let shown: Vec<String> = got
                .iter()
                .map(|(leaf, rg)| format!("{}->rg{}", leaf_name(*leaf), rg.0))
                .collect();
            return Err(format!("leaves are {}", shown.join(" ")));
        }
        return Ok(());
    }
    let (command, expected) = split_expectation(line);
    let mut tokens = command.split_whitespace();
    let verb = tokens.next().ok_or("empty command")?;
    if verb == "uniform" {
        let n: u32 = number(tokens.next().ok_or("uniform needs a count")?)?;
        no_more(tokens)?;
        if n == 0 || n as usize > maps::limits::PARTITIONS_MAX {
            return Err(format!(
                "uniform {n} is outside 1..={}",
                maps::limits::PARTITIONS_MAX
            ));
        }
        *map = Some(DpMap::uniform(n, |i| RgId(i as u32)));
        return Ok(());
    }
    let map = map
        .as_mut()
        .ok_or("no map: start the case with uniform N")?;
    match verb {
        "split" => {
            let leaf = parse_leaf(tokens.next().ok_or("split needs a leaf")?)?;
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            no_more(tokens)?;
            let result = map.split(leaf, rg);
            if !expect_error(&result, expected)? {
                if let (Some(expected), Ok((lower, upper))) = (expected, result) {
                    let got = format!("{} {}", leaf_name(lower), leaf_name(upper));
                    if normalize(expected) != got {
                        return Err(format!("split gave {got}"));
                    }
                }
            }
        }
        "merge" => {
            let a = parse_leaf(tokens.next().ok_or("merge needs two leaves")?)?;
            let b = parse_leaf(tokens.next().ok_or("merge needs two leaves")?)?;
            no_more(tokens)?;
            let result = map.merge(a, b);
            if !expect_error(&result, expected)? {
                if let (Some(expected), Ok(parent)) = (expected, result) {
                    if parse_leaf(expected)? != parent {
                        return Err(format!("merge gave {}", leaf_name(parent)));
                    }
                }
            }
        }
        "assign" => {
            let leaf = parse_leaf(tokens.next().ok_or("assign needs a leaf")?)?;
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            no_more(tokens)?;
            let result = map.assign(leaf, rg);
            if !expect_error(&result, expected)? {
                if let (Some(expected), Ok(old)) = (expected, result) {
                    if parse_rg(expected)? != old {
                        return Err(format!("assign returned rg{}", old.0));
                    }
                }
            }
        }
        "descend" => {
            let mut leaf = parse_leaf(tokens.next().ok_or("descend needs a leaf")?)?;
            let depth: u32 = number(tokens.next().ok_or("descend needs a depth")?)?;
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            no_more(tokens)?;
            if expected.is_some() {
                return Err("descend takes no expectation".to_string());
            }
            // Bounded: each pass deepens `leaf` by one, up to DEPTH_MAX.
            while leaf.depth().ok_or("invalid leaf")? < depth.min(PartitionId::DEPTH_MAX) {
                leaf = map.split(leaf, rg).map_err(|e| e.to_string())?.0;
            }
        }
        "lookup" => {
            let hashes = parse_hashes(tokens.next().ok_or("lookup needs a hash")?)?;
            no_more(tokens)?;
            let expected = expected.ok_or("lookup needs -> LEAF rgN")?;
            let mut parts = expected.split_whitespace();
            let leaf = parse_leaf(parts.next().ok_or("lookup needs -> LEAF rgN")?)?;
            let rg = parse_rg(parts.next().ok_or("lookup needs -> LEAF rgN")?)?;
            no_more(parts)?;
            for hash in hashes {
                let (got_leaf, got_rg) = map.lookup(hash);
                if (got_leaf, got_rg) != (leaf, rg) {
                    return Err(format!(
                        "hash {hash:#018x} went to {} rg{}",
                        leaf_name(got_leaf),
                        got_rg.0
                    ));
                }
            }
        }
        "len" | "depth_max" => {
            let want: usize = number(tokens.next().ok_or("needs a number")?)?;
            no_more(tokens)?;
            let got = if verb == "len" {
                map.len()
            } else {
                map.depth_max() as usize
            };
            if got != want {
                return Err(format!("{verb} is {got}"));
            }
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    map.validate()
        .map_err(|e| format!("map invalid after the step: {e}"))
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run_dp(name: &str, text: &str) -> Result<(), String> {
    let mut map = None;
    run(name, text, |line| dp_step(&mut map, line))
}

// ---- RG map ----

fn parse_bricks(text: &str) -> Result<Vec<BrickId>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|b| number(b.trim()).map(BrickId))
        .collect()
}

fn show_bricks(bricks: &[BrickId]) -> String {
    bricks
        .iter()
        .map(|b| b.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `epoch=E bricks=..` after `->` or in `expect`.
fn parse_entry<'a>(mut tokens: impl Iterator<Item = &'a str>) -> Result<RgEntry, String> {
    let epoch = number(arg(tokens.next(), "epoch")?)?;
    let bricks = parse_bricks(arg(tokens.next(), "bricks")?)?;
    no_more(tokens)?;
    Ok(RgEntry { epoch, bricks })
}

fn check_entry(map: &RgMap, rg: RgId, want: &RgEntry) -> Result<(), String> {
    match map.get(rg) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(format!(
            "rg={} is epoch={} bricks={}",
            rg.0,
            got.epoch,
            show_bricks(&got.bricks)
        )),
        None => Err(format!("rg={} is missing", rg.0)),
    }
}

fn rg_step(ours: &mut Option<(RgMap, RgMap)>, line: &str) -> Result<(), String> {
    let (command, expected) = split_expectation(line);
    let mut tokens = command.split_whitespace();
    let verb = tokens.next().ok_or("empty command")?;
    if verb == "new" {
        no_more(tokens)?;
        *ours = Some((RgMap::new(), RgMap::new()));
        return Ok(());
    }
    let (map, theirs) = ours.as_mut().ok_or("no map: start the case with new")?;
    match verb {
        "group" | "theirs" => {
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            let entry = parse_entry(tokens)?;
            let target = if verb == "group" {
                &mut *map
            } else {
                &mut *theirs
            };
            let result = target.insert(rg, entry);
            expect_error(&result, expected)?;
            if expected.is_some_and(|e| !e.starts_with("error:")) {
                return Err("only -> error: ... may follow".to_string());
            }
        }
        "exclude" | "include" => {
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            let brick = BrickId(number(arg(tokens.next(), "brick")?)?);
            no_more(tokens)?;
            let result = if verb == "exclude" {
                map.exclude(rg, brick).cloned()
            } else {
                map.include(rg, brick).cloned()
            };
            if !expect_error(&result, expected)? {
                if let Some(expected) = expected {
                    check_entry(map, rg, &parse_entry(expected.split_whitespace())?)?;
                }
            }
        }
        "expect" => {
            let rg = RgId(number(arg(tokens.next(), "rg")?)?);
            let rest: Vec<&str> = tokens.collect();
            if rest == ["missing"] {
                if map.get(rg).is_some() {
                    return Err(format!("rg={} exists", rg.0));
                }
            } else {
                check_entry(map, rg, &parse_entry(rest.into_iter())?)?;
            }
        }
        "merge_newer" => {
            no_more(tokens)?;
            let want = match expected {
                Some("changed") => true,
                Some("unchanged") => false,
                _ => return Err("merge_newer needs -> changed or -> unchanged".to_string()),
            };
            let got = map.merge_newer(theirs).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!("merge_newer returned {got}"));
            }
        }
        "count" => {
            let want: usize = number(tokens.next().ok_or("count needs a number")?)?;
            no_more(tokens)?;
            if map.len() != want {
                return Err(format!("count is {}", map.len()));
            }
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    map.validate()
        .map_err(|e| format!("map invalid after the step: {e}"))
}

fn run_rg(name: &str, text: &str) -> Result<(), String> {
    let mut maps = None;
    run(name, text, |line| rg_step(&mut maps, line))
}

fn testdata(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn dp_spec() {
    let text = testdata("dp.txt");
    if let Err(e) = run_dp("dp.txt", &text) {
        panic!("{e}");
    }
    let cases = text.lines().filter(|l| l.starts_with("uniform ")).count();
    assert!(cases >= 12, "dp.txt has only {cases} cases");
}

#[test]
fn rg_spec() {
    let text = testdata("rg.txt");
    if let Err(e) = run_rg("rg.txt", &text) {
        panic!("{e}");
    }
    let cases = text.lines().filter(|l| *l == "new").count();
    assert!(cases >= 12, "rg.txt has only {cases} cases");
}

/// A script runner: file name and text in, the first problem out.
type Runner = fn(&str, &str) -> Result<(), String>;

/// The runners must fail, with the line number, on malformed lines and on
/// wrong expectations; otherwise a typo would pass silently.
#[test]
fn runners_report_bad_lines_with_their_number() {
    let cases: [(&str, Runner, &str); 12] = [
        ("t:3:", run_dp, "# why\nuniform 2\nfrobnicate 1\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nsplit 2 rg=1\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nsplit 1 rg=x\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nleaves: 0->rg0 1->rg2\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nlookup 0b...1 -> 0 rg0\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nmerge 0 1 -> error: not sibling\n"),
        ("t:3:", run_dp, "# why\nuniform 2\nsplit 1 rg=1 -> 11 01\n"),
        ("t:1:", run_dp, "uniform 2\n"),
        ("t:2:", run_rg, "# why\nnew extra\n"),
        ("t:3:", run_rg, "# why\nnew\ngroup rg=1 epoch=1 bricks=1,x\n"),
        ("t:4:", run_rg, "# why\nnew\ngroup rg=1 epoch=1 bricks=1,2\nexclude rg=1 brick=2 -> epoch=3 bricks=1\n"),
        ("t:4:", run_rg, "# why\nnew\ngroup rg=1 epoch=1 bricks=1\nexclude rg=1 brick=1 -> error: not a member\n"),
    ];
    for (prefix, runner, script) in cases {
        match runner("t", script) {
            Ok(()) => panic!("accepted a bad script:\n{script}"),
            Err(e) => assert!(
                e.starts_with(prefix),
                "expected {prefix} in the failure, got:\n{e}\nfor:\n{script}"
            ),
        }
    }
}

/// And they accept well-formed scripts, so the failures above are about
/// the bad lines and not about the runner refusing everything.
#[test]
fn runners_accept_good_lines() {
    run_dp(
        "t",
        "# why\nuniform 2\nsplit 1 rg=1 -> 01 11\nlookup 0b...11 -> 11 rg1\n",
    )
    .unwrap();
    run_rg(
        "t",
        "# why\nnew\ngroup rg=1 epoch=1 bricks=1,2\nexclude rg=1 brick=2 -> epoch=2 bricks=1\n",
    )
    .unwrap();
}
