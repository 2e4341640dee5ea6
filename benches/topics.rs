//! Topic matching micro-benchmark: `TopicSelector::parse_mercure07(..).matches(..)` for an exact
//! selector, `*` and URI templates (each on a matching and a non-matching topic), then one topic
//! against the selectors of 10,000 subscriptions (mixed kinds), matched one by one as a linear
//! scan would.
//!
//! Run: `cargo bench --bench topics` (add `-- --quick` for a shorter run).

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use ssehub::topic::TopicSelector;

/// (name, selector, a topic it matches, a topic it does not match).
const CASES: [(&str, &str, &str, &str); 5] = [
    (
        "exact",
        "https://example.com/books/1",
        "https://example.com/books/1",
        "https://example.com/books/2",
    ),
    (
        "*",
        "*",
        "https://example.com/books/1",
        "https://example.com/books/1",
    ),
    (
        "{id}",
        "https://example.com/books/{id}",
        "https://example.com/books/1",
        "https://example.com/users/1",
    ),
    (
        "{/path*}",
        "https://example.com{/path*}",
        "https://example.com/books/1/reviews/7",
        "https://example.org/books/1",
    ),
    (
        "{?q,r}",
        "https://example.com/search{?q,r}",
        "https://example.com/search?q=dune&r=10",
        "https://example.com/search/dune",
    ),
];

fn single(c: &mut Criterion) {
    let mut group = c.benchmark_group("matches");
    for (name, selector, hit, miss) in CASES {
        let selector = TopicSelector::parse_mercure07(selector);
        for (outcome, topic) in [("match", hit), ("no match", miss)] {
            if name == "*" && outcome == "no match" {
                continue; // `*` matches every topic.
            }
            assert_eq!(
                selector.matches(topic),
                outcome == "match",
                "{name} on {topic}"
            );
            group.bench_with_input(BenchmarkId::new(name, outcome), &topic, |b, topic| {
                b.iter(|| black_box(&selector).matches(black_box(topic)))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("parse_mercure07");
    for (name, selector, _, _) in CASES {
        group.bench_with_input(BenchmarkId::from_parameter(name), &selector, |b, s| {
            b.iter(|| TopicSelector::parse_mercure07(black_box(s)))
        });
    }
    group.finish();
}

/// The selectors of `n` subscriptions: 80 % exact topics, 6 % each of the three template
/// shapes, 2 % `*`. Each selector names its own resource, so about one in a hundred matches.
fn mixed_selectors(n: usize) -> Vec<TopicSelector> {
    (0..n)
        .map(|i| {
            let text = match i % 50 {
                0 => "*".to_owned(),
                1..=3 => format!("https://example.com/shelves/{i}/books/{{id}}"),
                4..=6 => format!("https://example.com/authors/{i}{{/path*}}"),
                7..=9 => format!("https://example.com/search/{i}{{?q,r}}"),
                _ => format!("https://example.com/books/{i}"),
            };
            TopicSelector::parse_mercure07(&text)
        })
        .collect()
}

fn many(c: &mut Criterion) {
    let started = Instant::now();
    let selectors = mixed_selectors(10_000);
    eprintln!(
        "compiled 10,000 mixed selectors in {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut group = c.benchmark_group("10,000 selectors");
    for (name, topic) in [
        ("exact topic", "https://example.com/books/4242"),
        ("template topic", "https://example.com/shelves/101/books/9"),
        ("no selector but *", "https://example.org/nothing"),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), &topic, |b, topic| {
            b.iter(|| {
                selectors
                    .iter()
                    .filter(|s| s.matches(black_box(topic)))
                    .count()
            })
        });
    }
    group.finish();
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("topics benchmark: run it with `cargo bench --bench topics`");
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    single(&mut criterion);
    many(&mut criterion);
    criterion.final_summary();
}
