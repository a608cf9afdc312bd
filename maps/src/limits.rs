//! Every limit of the routing facts, in one place. Decoding checks counts
//! against these before it allocates, and configuration is refused past
//! them. Limits of the protocol (frame and key sizes) live in `wire`; limits
//! of a brick's queues live in `brick`.

use crate::ids::PartitionId;

/// The most DP leaves (partitions) a cluster may have. At the paper's 100 MB
/// per partition this is 6.4 TB, several times its 1 TB cluster, and an
/// encoded map of this size is still under a megabyte.
pub const PARTITIONS_MAX: usize = 65536;

/// The most replica groups a map may hold. Merging partitions leaves the
/// upper child's group unused, so groups may outnumber partitions; twice the
/// partitions is room for a full round of merges before groups are pruned.
pub const RGS_MAX: usize = 2 * PARTITIONS_MAX;

/// The most bricks in one replica group. The paper ran two; more than a
/// handful makes every write wait on the slowest of many.
pub const REPLICAS_MAX: usize = 16;

/// The most distinct bricks a cluster (and so a map) may name. The paper ran
/// 128; every brick may end up connected to every other, so this bounds the
/// connections a brick must be ready to hold.
pub const BRICKS_MAX: usize = 4096;

/// The deepest a DP leaf may be: the partition id keeps one marker bit above
/// the prefix, so 63 hash bits are all it can fix.
pub const DEPTH_MAX: u32 = PartitionId::DEPTH_MAX;

/// The largest `cluster.toml` that is read. A file with `BRICKS_MAX` bricks
/// is about 200 KB; anything far larger is not a configuration.
pub const CONFIG_SIZE_MAX: u64 = 1024 * 1024;

/// The largest partition arena `cluster.toml` may ask for, in megabytes. The
/// arena is one memory map; 64 GB is far past the paper's 100 MB and still
/// well inside a 64-bit address space with many partitions per brick.
pub const PARTITION_CAPACITY_MB_MAX: u64 = 64 * 1024;

/// The longest timeout `cluster.toml` may set, in milliseconds (one hour).
/// Longer ones are almost surely a unit mistake, such as microseconds
/// written where milliseconds are meant.
pub const TIMEOUT_MS_MAX: u64 = 60 * 60 * 1000;

/// The most retries of one operation `cluster.toml` may set. With backoff,
/// more than this would hold a caller for far longer than any timeout.
pub const RETRIES_MAX: u32 = 1000;

/// Bytes of one encoded DP leaf: partition id (u64) and RG id (u32).
pub const ENCODED_LEAF_SIZE: usize = 8 + 4;

/// Bytes of one encoded RG entry without its bricks: RG id (u32), epoch
/// (u64) and brick count (u8).
pub const ENCODED_RG_HEADER_SIZE: usize = 4 + 8 + 1;

/// Bytes of the encoding's fixed header: format version (u8), DP version
/// (u64), leaf count (u32); the RG count (u32) follows the leaves.
pub const ENCODED_HEADER_SIZE: usize = 1 + 8 + 4 + 4;

/// The largest encoded maps: every limit reached at once. Receivers of maps
/// over the network may refuse anything larger before decoding.
pub const ENCODED_SIZE_MAX: usize = ENCODED_HEADER_SIZE
    + PARTITIONS_MAX * ENCODED_LEAF_SIZE
    + RGS_MAX * (ENCODED_RG_HEADER_SIZE + REPLICAS_MAX * 4);

// Relations the code relies on, checked when the crate compiles.
const _: () = assert!(PARTITIONS_MAX.is_power_of_two());
// Leaf and RG counts are encoded as u32, brick counts as u8.
const _: () = assert!(PARTITIONS_MAX <= u32::MAX as usize);
const _: () = assert!(RGS_MAX <= u32::MAX as usize);
const _: () = assert!(REPLICAS_MAX <= u8::MAX as usize);
// `DpMap::uniform` gives each partition its own group.
const _: () = assert!(RGS_MAX >= PARTITIONS_MAX);
// A group's bricks are distinct, so a group can never need more bricks
// than a cluster may have.
const _: () = assert!(REPLICAS_MAX <= BRICKS_MAX);
// A uniform map of PARTITIONS_MAX leaves must fit under DEPTH_MAX.
const _: () = assert!(PARTITIONS_MAX.trailing_zeros() < DEPTH_MAX);

/// The largest copy rate cap, in MiB/s (`recovery.copy_rate_mb_s`).
pub const COPY_RATE_MB_S_MAX: u64 = 1 << 20;
