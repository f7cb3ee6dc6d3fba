//! Regions and their owners (SPEC §11): the world cut into H3 cells at the region resolution,
//! each owned by one instance among the peers, chosen by rendezvous (highest-random-weight)
//! hashing of region and instance id. Every instance computes the same owner from the same peer
//! list, and adding or removing an instance moves only the regions it gains or loses.

use h3o::{CellIndex, Resolution};
use sha2::{Digest as _, Sha256};

use super::LatLng;

/// One instance: its id and the base URL peers reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Instance id (in Kubernetes, the pod name).
    pub id: String,
    /// `http://host:port`.
    pub url: String,
}

/// Who owns which region.
#[derive(Debug, Clone)]
pub struct Regions {
    res: Resolution,
    peers: Vec<Peer>,
}

impl Regions {
    /// Regions at `res` owned among `peers` (at least one).
    ///
    /// # Panics
    ///
    /// Never for a non-empty `peers`; an empty list is a programming error.
    #[must_use]
    pub fn new(res: Resolution, peers: Vec<Peer>) -> Self {
        assert!(!peers.is_empty(), "a map has at least one instance");
        Self { res, peers }
    }

    /// The region a point lies in.
    #[must_use]
    pub fn region_of(&self, point: LatLng) -> CellIndex {
        point.to_h3().to_cell(self.res)
    }

    /// The instance owning `region`: the peer with the highest weight for it.
    #[must_use]
    pub fn owner(&self, region: CellIndex) -> &Peer {
        self.peers
            .iter()
            .max_by_key(|p| (weight(region, &p.id), p.id.as_str()))
            .unwrap_or(&self.peers[0])
    }
}

/// The rendezvous weight of `instance` for `region`: the first 8 bytes of SHA-256 over both, so
/// every build and platform agrees.
fn weight(region: CellIndex, instance: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(u64::from(region).to_be_bytes())
        .chain_update(instance.as_bytes())
        .finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(ids: &[&str]) -> Vec<Peer> {
        ids.iter()
            .map(|id| Peer {
                id: (*id).to_owned(),
                url: format!("http://{id}:8080"),
            })
            .collect()
    }

    fn regions_of_europe() -> Vec<CellIndex> {
        let mut out = Vec::new();
        for lat in (36..60).step_by(2) {
            for lng in (-9..30).step_by(2) {
                let p = LatLng::new(f64::from(lat), f64::from(lng)).unwrap();
                out.push(p.to_h3().to_cell(Resolution::Three));
            }
        }
        out
    }

    #[test]
    fn a_single_instance_owns_everything() {
        let r = Regions::new(Resolution::Three, peers(&["only"]));
        assert!(regions_of_europe().iter().all(|&g| r.owner(g).id == "only"));
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_peers_are_listed_in() {
        let a = Regions::new(Resolution::Three, peers(&["a", "b", "c"]));
        let b = Regions::new(Resolution::Three, peers(&["c", "a", "b"]));
        for g in regions_of_europe() {
            assert_eq!(a.owner(g), b.owner(g));
        }
    }

    #[test]
    fn regions_spread_over_instances_and_removing_one_moves_only_its_regions() {
        let three = Regions::new(Resolution::Three, peers(&["a", "b", "c"]));
        let two = Regions::new(Resolution::Three, peers(&["a", "b"]));
        let all = regions_of_europe();
        let on_c = all.iter().filter(|&&g| three.owner(g).id == "c").count();
        assert!(
            on_c > all.len() / 6 && on_c < all.len() / 2,
            "about a third each: {on_c} of {}",
            all.len()
        );
        for g in all {
            let before = &three.owner(g).id;
            if before != "c" {
                assert_eq!(&two.owner(g).id, before, "a region of a survivor stays put");
            }
        }
    }

    #[test]
    fn weights_are_fixed_across_builds() {
        // A change of hash would move every region between instances of different versions.
        let g = LatLng::new(52.52, 13.405)
            .unwrap()
            .to_h3()
            .to_cell(Resolution::Three);
        assert_eq!(weight(g, "hexdispatch-0"), weight(g, "hexdispatch-0"));
        assert_ne!(weight(g, "hexdispatch-0"), weight(g, "hexdispatch-1"));
        assert_eq!(format!("{:016x}", weight(g, "hexdispatch-0")).len(), 16);
    }
}
