//! Dependency resolution at scale: the start order of 1,000 and 10,000 plugins whose
//! dependencies form a random DAG (each plugin depends on up to 3 earlier ones, with semver
//! requirements to check).
//!
//! cargo bench -p plugd-core --bench resolve

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use plugd_core::start_order;
use plugd_manifest::{Dependency, Format, Manifest};

/// A small deterministic generator (no rand dependency needed for a benchmark fixture).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn plugins(n: usize) -> Vec<(Manifest, i32)> {
    let template = Manifest::from_str(
        "name: p0\nversion: 1.2.3\ndescription: bench\nauthor: plugd\n",
        Format::Yaml,
        None,
    )
    .expect("manifest");
    let req = semver::VersionReq::parse(">=1.0.0,<2.0.0").expect("req");
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let mut m = template.clone();
            m.name = format!("p{i}");
            if i > 0 {
                for _ in 0..(rng.next() % 4) {
                    let d = (rng.next() as usize) % i;
                    m.dependencies.push(Dependency {
                        name: format!("p{d}"),
                        version: req.clone(),
                        version_text: ">=1.0.0,<2.0.0".into(),
                        optional: false,
                    });
                }
            }
            let priority = [100, 200, 300, 400][(rng.next() % 4) as usize];
            (m, priority)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    group.sample_size(20);
    for n in [1_000, 10_000] {
        let owned = plugins(n);
        let input: Vec<(&Manifest, i32)> = owned.iter().map(|(m, p)| (m, *p)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &input, |b, input| {
            b.iter(|| {
                let order = start_order(input).expect("a DAG has an order");
                assert_eq!(order.len(), input.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
