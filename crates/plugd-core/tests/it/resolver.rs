//! Property tests of the start order: random DAGs give an order that respects every dependency;
//! random graphs with a cycle report a cycle that really is one.

use std::collections::HashMap;

use plugd_core::{OrderError, start_order};
use plugd_manifest::{Dependency, Format, Manifest};
use proptest::prelude::*;

fn manifests(edges: &[(usize, usize)], n: usize) -> Vec<Manifest> {
    let template = Manifest::from_str(
        "name: p0\nversion: 1.0.0\ndescription: d\nauthor: a\n",
        Format::Yaml,
        None,
    )
    .unwrap();
    (0..n)
        .map(|i| {
            let mut m = template.clone();
            m.name = format!("p{i}");
            for &(_, to) in edges.iter().filter(|(from, _)| *from == i) {
                m.dependencies.push(Dependency {
                    name: format!("p{to}"),
                    version: semver::VersionReq::STAR,
                    version_text: "*".into(),
                    optional: false,
                });
            }
            m
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_dag_has_an_order_that_respects_every_dependency(
        n in 1usize..40,
        raw in proptest::collection::vec((0usize..40, 0usize..40), 0..120),
        priorities in proptest::collection::vec(0i32..500, 40),
    ) {
        // Edges only from a higher index to a lower one: acyclic by construction.
        let edges: Vec<(usize, usize)> = raw
            .into_iter()
            .map(|(a, b)| (a % n, b % n))
            .filter(|(a, b)| a > b)
            .collect();
        let ms = manifests(&edges, n);
        let input: Vec<(&Manifest, i32)> = ms.iter().zip(&priorities).map(|(m, p)| (m, *p)).collect();
        let order = start_order(&input).expect("a DAG always has an order");
        prop_assert_eq!(order.len(), n);
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        for (from, to) in &edges {
            prop_assert!(position[to] < position[from], "p{} starts before its dependency p{}", from, to);
        }
    }

    #[test]
    fn a_graph_with_a_cycle_reports_a_real_cycle(
        n in 2usize..30,
        raw in proptest::collection::vec((0usize..30, 0usize..30), 0..80),
        cycle_len in 2usize..6,
    ) {
        let mut edges: Vec<(usize, usize)> = raw
            .into_iter()
            .map(|(a, b)| (a % n, b % n))
            .filter(|(a, b)| a != b)
            .collect();
        // Force one cycle through the first nodes.
        let k = cycle_len.min(n);
        for i in 0..k {
            edges.push((i, (i + 1) % k));
        }
        edges.sort();
        edges.dedup();
        let ms = manifests(&edges, n);
        let input: Vec<(&Manifest, i32)> = ms.iter().map(|m| (m, 100)).collect();
        match start_order(&input) {
            Err(OrderError::Cycle(names)) => {
                prop_assert!(names.len() >= 3, "{:?}", names);
                prop_assert_eq!(names.first(), names.last());
                let index = |s: &str| s[1..].parse::<usize>().unwrap();
                for pair in names.windows(2) {
                    let (a, b) = (index(&pair[0]), index(&pair[1]));
                    prop_assert!(edges.contains(&(a, b)), "p{} -> p{} is not a dependency in {:?}", a, b, names);
                }
            }
            other => prop_assert!(false, "expected a cycle, got {:?}", other),
        }
    }
}
