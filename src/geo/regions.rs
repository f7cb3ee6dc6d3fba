//! Regions and their owners (SPEC §11): the world cut into H3 cells at the region resolution,
//! each owned by one instance among the peers, chosen by rendezvous (highest-random-weight)
//! hashing of region and instance id. Every instance computes the same owner from the same peer
//! list, and adding or removing an instance moves only the regions it gains or loses.
//!
//! A trip id carries its pickup's region (docs/adr/0002): the low 32 bits of the UUIDv7's random
//! part hold the region cell packed as resolution (4 bits), base cell (7) and one 3-bit digit per
//! resolution, so any instance can tell a trip's owner from its id alone.

use h3o::{CellIndex, Resolution};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

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

    /// A new trip id (UUIDv7) carrying the region of `pickup`.
    #[must_use]
    pub fn trip_id(&self, pickup: LatLng) -> Uuid {
        let packed = pack(self.region_of(pickup));
        Uuid::from_u128((Uuid::now_v7().as_u128() & !0xffff_ffff) | u128::from(packed))
    }

    /// The region a trip id carries, if it carries one at this map's resolution.
    #[must_use]
    pub fn region_of_trip(&self, trip_id: Uuid) -> Option<CellIndex> {
        let packed = u32::try_from(trip_id.as_u128() & 0xffff_ffff).ok()?;
        unpack(packed).filter(|cell| cell.resolution() == self.res)
    }

    /// The resolution regions are cells at.
    #[must_use]
    pub const fn resolution(&self) -> Resolution {
        self.res
    }

    /// The peers, in the order configured.
    #[must_use]
    pub fn peers(&self) -> &[Peer] {
        &self.peers
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

/// The finest region resolution a trip id can carry (4 + 7 + 3 × 7 = 32 bits).
pub const MAX_REGION_RESOLUTION: u8 = 7;

/// Bit offset of H3 digit `i` (1-based) in a cell index.
fn digit_shift(i: u8) -> u32 {
    45 - 3 * u32::from(i)
}

/// A cell at resolution ≤ 7 in 32 bits: resolution, base cell, its digits.
fn pack(cell: CellIndex) -> u32 {
    let raw = u64::from(cell);
    let res = u8::from(cell.resolution()).min(MAX_REGION_RESOLUTION);
    let base = ((raw >> 45) & 0x7f) as u32;
    let mut packed = (u32::from(res) << 28) | (base << 21);
    for i in 1..=res {
        let digit = ((raw >> digit_shift(i)) & 7) as u32;
        packed |= digit << (21 - 3 * u32::from(i));
    }
    packed
}

/// The cell `pack` made, if these bits are one.
fn unpack(packed: u32) -> Option<CellIndex> {
    let res = u8::try_from(packed >> 28).ok()?;
    if res > MAX_REGION_RESOLUTION {
        return None;
    }
    let base = u64::from((packed >> 21) & 0x7f);
    // Mode 1 (a cell), the resolution, the base cell, then the digits; unused digits are 7.
    let mut raw = (1_u64 << 59) | (u64::from(res) << 52) | (base << 45);
    for i in 1..=15_u8 {
        let digit = if i <= res {
            u64::from((packed >> (21 - 3 * u32::from(i))) & 7)
        } else {
            7
        };
        raw |= digit << digit_shift(i);
    }
    CellIndex::try_from(raw).ok()
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
    fn a_trip_id_carries_its_region_at_every_resolution_up_to_seven() {
        for res in 0..=MAX_REGION_RESOLUTION {
            let res = Resolution::try_from(res).unwrap();
            let r = Regions::new(res, peers(&["a", "b"]));
            for lat in (-80..=80).step_by(10) {
                for lng in (-170..=170).step_by(17) {
                    let p = LatLng::new(f64::from(lat) + 0.3, f64::from(lng) + 0.7).unwrap();
                    let id = r.trip_id(p);
                    assert_eq!(id.get_version_num(), 7);
                    assert_eq!(r.region_of_trip(id), Some(r.region_of(p)), "{res:?} {p:?}");
                }
            }
        }
    }

    #[test]
    fn ids_minted_elsewhere_or_at_another_resolution_carry_no_region() {
        let r3 = Regions::new(Resolution::Three, peers(&["a"]));
        let r5 = Regions::new(Resolution::Five, peers(&["a"]));
        let id = r5.trip_id(LatLng::new(52.52, 13.405).unwrap());
        assert_eq!(r3.region_of_trip(id), None);
        assert_eq!(r3.region_of_trip(Uuid::nil()), None);
        assert_eq!(r3.region_of_trip(Uuid::from_u128(0xffff_ffff)), None);
        // Two trips from one pickup in one millisecond still differ.
        let p = LatLng::new(48.85, 2.35).unwrap();
        assert_ne!(r3.trip_id(p), r3.trip_id(p));
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
