import RingLogIO
import RingLogKafka
import RingLogStorage

/// Kafka consumer groups (docs/kafka.md, "Consumer groups"): membership, generations and the
/// join/sync rounds live in memory, as Kafka's coordinator keeps them; committed offsets are
/// cursors named as the group on each partition's log, durable before OffsetCommit is answered.
/// This broker is every group's coordinator. A member not heard from (Heartbeat, JoinGroup,
/// SyncGroup, OffsetCommit) within its session timeout leaves; a join round ends when every
/// member has rejoined or the longest rebalance timeout has passed.
final class KafkaGroupCoordinator {
    final class Member {
        let id: String
        var sessionNanos: UInt64
        var rebalanceNanos: UInt64
        var protocols: [KafkaJoinGroupRequest.GroupProtocol]
        var lastHeardNanos: UInt64
        var rejoined = false
        init(id: String, sessionNanos: UInt64, rebalanceNanos: UInt64, protocols: [KafkaJoinGroupRequest.GroupProtocol], nowNanos: UInt64) {
            self.id = id
            self.sessionNanos = sessionNanos
            self.rebalanceNanos = rebalanceNanos
            self.protocols = protocols
            lastHeardNanos = nowNanos
        }
    }

    /// A response held until its round ends.
    struct Held {
        weak var connection: Connection?
        var sequence: UInt32
        var header: KafkaRequestHeader
        var memberID: String
    }

    final class Group {
        let id: String
        var generation: Int32 = 0
        var protocolType = ""
        var protocolName = ""
        var leader = ""
        var members: [String: Member] = [:]
        /// Members in the order they joined (the leader is the first still there).
        var order: [String] = []
        var joining = false
        var joinDeadlineNanos: UInt64 = 0
        var heldJoins: [Held] = []
        var heldSyncs: [Held] = []
        var assignments: [String: [UInt8]]? = nil
        init(id: String) { self.id = id }
    }

    unowned let dispatcher: KafkaDispatcher
    private var groups: [String: Group] = [:]
    private var memberCount = 0
    private var nextSweepNanos: UInt64 = 0
    static let sweepIntervalNanos: UInt64 = 100_000_000
    /// Session and rebalance timeouts are held to this range (Kafka's broker defaults).
    static let sessionRange: ClosedRange<Int32> = 6_000...300_000
    /// Bounds on what the coordinator keeps: members in all groups together, protocols a member
    /// offers, and bytes of a member's protocol metadata or assignment (64 MiB at most in all).
    static let maxMembersTotal = 4_096
    static let maxProtocols = 16
    static let maxMemberBytes = 16 << 10

    private var totalMembers: Int { groups.values.reduce(0) { $0 + $1.members.count } }

    init(dispatcher: KafkaDispatcher) { self.dispatcher = dispatcher }

    var nextDeadlineNanos: UInt64? { groups.isEmpty ? nil : nextSweepNanos }

    // MARK: Requests

    func join(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaJoinGroupRequest) {
        let sequence = dispatcher.begin(connection)
        let now = MonotonicClock.nanos()
        let fail = { [unowned self] (error: KafkaErrorCode) in
            dispatcher.respond(connection, sequence, header, KafkaJoinGroupRequest.responseBody(
                version: header.apiVersion, errorCode: error, generationID: -1, protocolName: "", leader: "", memberID: request.memberID, members: []))
        }
        guard Self.validGroup(request.groupID) else { return fail(.invalidGroupId) }
        guard !request.protocols.isEmpty, !request.protocolType.isEmpty else { return fail(.inconsistentGroupProtocol) }
        guard Self.sessionRange.contains(request.sessionTimeoutMillis) else { return fail(.invalidSessionTimeout) }
        // What a member keeps is bounded: a few protocols with small metadata (a consumer's is
        // its topic list), and a bounded number of members in all.
        guard request.protocols.count <= Self.maxProtocols, request.protocols.reduce(0, { $0 + $1.name.utf8.count + $1.metadata.count }) <= Self.maxMemberBytes
        else { return fail(.invalidRequest) }
        let group: Group
        if let existing = groups[request.groupID] {
            group = existing
        } else {
            // A group comes to exist with its first member, never empty.
            guard request.memberID.isEmpty else { return fail(.unknownMemberId) }
            guard groups.count < dispatcher.settings.maxGroups, totalMembers < Self.maxMembersTotal else { return fail(.coordinatorNotAvailable) }
            group = Group(id: request.groupID)
            groups[request.groupID] = group
            nextSweepNanos = now + Self.sweepIntervalNanos
        }
        if !group.members.isEmpty && group.protocolType != request.protocolType { return fail(.inconsistentGroupProtocol) }
        if !group.members.isEmpty, !request.protocols.contains(where: { offered in group.members.values.allSatisfy { $0.protocols.contains { $0.name == offered.name } } }) {
            return fail(.inconsistentGroupProtocol)
        }
        let member: Member
        if request.memberID.isEmpty {
            guard group.members.count < dispatcher.settings.maxMembersPerGroup, totalMembers < Self.maxMembersTotal else {
                return fail(.groupMaxSizeReached)
            }
            memberCount += 1
            // Unique across restarts too (a consumer from before one cannot pass for a new member).
            let id = "\(header.clientID ?? "member")-\(memberCount)-\(String(UInt64.random(in: 1...UInt64.max), radix: 36))"
            member = Member(
                id: id, sessionNanos: UInt64(request.sessionTimeoutMillis) * 1_000_000,
                rebalanceNanos: UInt64(Self.sessionRange.clamp(request.rebalanceTimeoutMillis)) * 1_000_000, protocols: request.protocols, nowNanos: now)
            group.members[id] = member
            group.order.append(id)
        } else if let known = group.members[request.memberID] {
            member = known
            member.lastHeardNanos = now
            if !group.joining, group.assignments != nil, known.protocols == request.protocols, known.id != group.leader {
                // Nothing changed for it: the current generation, as Kafka answers a member that
                // rejoins a stable group (no new round for the others).
                dispatcher.respond(connection, sequence, header, KafkaJoinGroupRequest.responseBody(
                    version: header.apiVersion, errorCode: .none, generationID: group.generation, protocolName: group.protocolName,
                    leader: group.leader, memberID: known.id, members: []))
                return
            }
            member.protocols = request.protocols
        } else {
            return fail(.unknownMemberId)
        }
        group.protocolType = request.protocolType
        member.rejoined = true
        // A join sent again while the first still waits: the first is answered now (every
        // request gets its response, in order), the second waits in its place.
        for earlier in group.heldJoins where earlier.memberID == member.id {
            if let held = earlier.connection {
                dispatcher.respond(held, earlier.sequence, earlier.header, KafkaJoinGroupRequest.responseBody(
                    version: earlier.header.apiVersion, errorCode: .rebalanceInProgress, generationID: -1, protocolName: "", leader: "",
                    memberID: member.id, members: []))
            }
        }
        group.heldJoins.removeAll { $0.memberID == member.id }
        group.heldJoins.append(Held(connection: connection, sequence: sequence, header: header, memberID: member.id))
        startRound(group, now: now)
        if group.members.values.allSatisfy(\.rejoined) { completeRound(group) }
    }

    func sync(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaSyncGroupRequest) {
        let sequence = dispatcher.begin(connection)
        let answer = { [unowned self] (error: KafkaErrorCode, assignment: [UInt8]) in
            dispatcher.respond(connection, sequence, header, KafkaSyncGroupRequest.responseBody(version: header.apiVersion, errorCode: error, assignment: assignment))
        }
        guard let group = groups[request.groupID], let member = group.members[request.memberID] else { return answer(.unknownMemberId, []) }
        member.lastHeardNanos = MonotonicClock.nanos()
        if group.joining { return answer(.rebalanceInProgress, []) }
        guard request.generationID == group.generation else { return answer(.illegalGeneration, []) }
        if request.memberID == group.leader {
            guard request.assignments.allSatisfy({ $0.assignment.count <= Self.maxMemberBytes }) else { return answer(.invalidRequest, []) }
            group.assignments = Dictionary(
                request.assignments.filter { group.members[$0.memberID] != nil }.map { ($0.memberID, $0.assignment) }, uniquingKeysWith: { first, _ in first })
        }
        guard let assignments = group.assignments else {
            group.heldSyncs.append(Held(connection: connection, sequence: sequence, header: header, memberID: member.id))
            return
        }
        answer(.none, assignments[member.id] ?? [])
        let held = group.heldSyncs
        group.heldSyncs.removeAll()
        for waiting in held { answerSync(waiting, .none, assignments[waiting.memberID] ?? []) }
    }

    func heartbeat(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaMembershipRequest) {
        let sequence = dispatcher.begin(connection)
        dispatcher.respond(connection, sequence, header, KafkaMembershipRequest.responseBody(version: header.apiVersion, errorCode: check(request)))
    }

    func leave(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaMembershipRequest) {
        let sequence = dispatcher.begin(connection)
        var error = KafkaErrorCode.unknownMemberId
        if let group = groups[request.groupID], group.members[request.memberID] != nil {
            remove(request.memberID, from: group)
            error = .none
        }
        dispatcher.respond(connection, sequence, header, KafkaMembershipRequest.responseBody(version: header.apiVersion, errorCode: error))
    }

    /// Whether a member of the current generation speaks (Heartbeat, OffsetCommit): none when it
    /// is, else the error telling the client what to do (rejoin, or join anew).
    func check(_ request: KafkaMembershipRequest) -> KafkaErrorCode {
        check(group: request.groupID, generation: request.generationID, member: request.memberID)
    }

    private func check(group id: String, generation: Int32?, member memberID: String, committing: Bool = false) -> KafkaErrorCode {
        guard let group = groups[id], let member = group.members[memberID] else { return .unknownMemberId }
        member.lastHeardNanos = MonotonicClock.nanos()
        // While members rejoin, the generation that is ending may still commit what it consumed
        // (as Kafka allows); a heartbeat learns that it must rejoin.
        if group.joining && !(committing && generation == group.generation) { return .rebalanceInProgress }
        if let generation, generation != group.generation { return .illegalGeneration }
        return .none
    }

    /// Whether an OffsetCommit may go on: a commit outside a group's generation (generation -1,
    /// as standalone consumers send) always may.
    func commitAllowed(group: String, generation: Int32, member: String) -> KafkaErrorCode {
        guard generation >= 0 else { return .none }
        return check(group: group, generation: generation, member: member, committing: true)
    }

    // MARK: Rounds

    private func startRound(_ group: Group, now: UInt64) {
        guard !group.joining else { return }
        group.joining = true
        group.assignments = nil
        let wait = group.members.values.map(\.rebalanceNanos).max() ?? 0
        group.joinDeadlineNanos = now + wait
        // Members waiting in SyncGroup learn that a new round started.
        let held = group.heldSyncs
        group.heldSyncs.removeAll()
        for waiting in held { answerSync(waiting, .rebalanceInProgress, []) }
    }

    /// Ends a join round: members that did not rejoin leave; a new generation with the leader's
    /// first protocol that every member supports.
    private func completeRound(_ group: Group) {
        for id in group.order where group.members[id]?.rejoined == false { group.members[id] = nil }
        group.order.removeAll { group.members[$0] == nil }
        group.joining = false
        guard let leaderID = group.order.first(where: { $0 == group.leader }) ?? group.order.first, let leader = group.members[leaderID] else {
            groups[group.id] = nil
            return
        }
        group.leader = leaderID
        group.generation &+= 1
        group.protocolName = leader.protocols.first { offered in group.members.values.allSatisfy { $0.protocols.contains { $0.name == offered.name } } }?.name ?? ""
        let everyone = members(of: group)
        // Their session deadlines count from the end of the round, as Kafka's do (a member that
        // waited in JoinGroup longer than its session timeout is not expired for it).
        let now = MonotonicClock.nanos()
        for member in group.members.values {
            member.rejoined = false
            member.lastHeardNanos = now
        }
        let held = group.heldJoins
        group.heldJoins.removeAll()
        for waiting in held {
            guard let connection = waiting.connection else { continue }
            dispatcher.respond(connection, waiting.sequence, waiting.header, KafkaJoinGroupRequest.responseBody(
                version: waiting.header.apiVersion, errorCode: .none, generationID: group.generation, protocolName: group.protocolName,
                leader: group.leader, memberID: waiting.memberID, members: waiting.memberID == group.leader ? everyone : []))
        }
    }

    /// What the leader is given to assign from: every member with its metadata for the chosen protocol.
    private func members(of group: Group) -> [KafkaJoinGroupRequest.Member] {
        group.order.compactMap { id in
            group.members[id].map { member in
                KafkaJoinGroupRequest.Member(memberID: id, metadata: member.protocols.first { $0.name == group.protocolName }?.metadata ?? [])
            }
        }
    }

    private func answerSync(_ held: Held, _ error: KafkaErrorCode, _ assignment: [UInt8]) {
        guard let connection = held.connection else { return }
        dispatcher.respond(connection, held.sequence, held.header, KafkaSyncGroupRequest.responseBody(
            version: held.header.apiVersion, errorCode: error, assignment: assignment))
    }

    private func remove(_ memberID: String, from group: Group) {
        group.members[memberID] = nil
        group.order.removeAll { $0 == memberID }
        // Its requests still waiting are answered: every request gets its response, in order.
        for held in group.heldJoins where held.memberID == memberID {
            guard let connection = held.connection else { continue }
            dispatcher.respond(connection, held.sequence, held.header, KafkaJoinGroupRequest.responseBody(
                version: held.header.apiVersion, errorCode: .unknownMemberId, generationID: -1, protocolName: "", leader: "", memberID: memberID,
                members: []))
        }
        group.heldJoins.removeAll { $0.memberID == memberID }
        for held in group.heldSyncs where held.memberID == memberID { answerSync(held, .unknownMemberId, []) }
        group.heldSyncs.removeAll { $0.memberID == memberID }
        if group.members.isEmpty {
            groups[group.id] = nil
            return
        }
        startRound(group, now: MonotonicClock.nanos())
        if group.members.values.allSatisfy(\.rejoined) { completeRound(group) }
    }

    func runTimers(nowNanos now: UInt64) {
        guard !groups.isEmpty, now >= nextSweepNanos else { return }
        nextSweepNanos = now + Self.sweepIntervalNanos
        for group in Array(groups.values) {
            for member in Array(group.members.values) where now > member.lastHeardNanos + member.sessionNanos && !(group.joining && member.rejoined) {
                dispatcher.server.logger.debug("kafka group member timed out", metadata: ["group": "\(group.id)", "member": "\(member.id)"])
                remove(member.id, from: group)
            }
            if group.joining, now >= group.joinDeadlineNanos { completeRound(group) }
        }
    }

    /// Held responses are answered now so connections can close.
    func beginDraining() {
        for group in groups.values {
            for held in group.heldJoins {
                guard let connection = held.connection else { continue }
                dispatcher.respond(connection, held.sequence, held.header, KafkaJoinGroupRequest.responseBody(
                    version: held.header.apiVersion, errorCode: .coordinatorNotAvailable, generationID: -1, protocolName: "", leader: "",
                    memberID: held.memberID, members: []))
            }
            for held in group.heldSyncs { answerSync(held, .coordinatorNotAvailable, []) }
        }
        groups.removeAll()
    }

    /// Group ids become cursor names: the same rules as log names.
    static func validGroup(_ id: String) -> Bool { LogName.problem(with: id) == nil }
}

extension ClosedRange where Bound == Int32 {
    func clamp(_ value: Int32) -> Int32 { Swift.min(Swift.max(value, lowerBound), upperBound) }
}

// MARK: Committed offsets

extension KafkaDispatcher {
    func offsetCommit(_ connection: Connection, _ session: KafkaSession, _ header: KafkaRequestHeader, _ request: KafkaOffsetCommitRequest) {
        let sequence = begin(connection)
        var results = request.topics.map { topic in (topic: topic.name, partitions: topic.partitions.map { (index: $0.index, errorCode: KafkaErrorCode.none) }) }
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            if remaining == 0 { respond(connection, sequence, header, KafkaOffsetCommitRequest.responseBody(version: header.apiVersion, results)) }
        }
        let groupError: KafkaErrorCode =
            KafkaGroupCoordinator.validGroup(request.groupID)
            ? groups.commitAllowed(group: request.groupID, generation: request.generationID, member: request.memberID) : .invalidGroupId
        for (topicIndex, topic) in request.topics.enumerated() {
            for (partitionIndex, partition) in topic.partitions.enumerated() {
                let set = { (error: KafkaErrorCode) in results[topicIndex].partitions[partitionIndex].errorCode = error }
                if groupError != .none {
                    set(groupError)
                    continue
                }
                guard partition.index >= 0, KafkaTopics.problem(with: topic.name) == nil,
                    let log = KafkaTopics.log(topic.name, Int(partition.index), in: store)
                else {
                    set(.unknownTopicOrPartition)
                    continue
                }
                guard partition.offset >= 0, UInt64(partition.offset) <= log.committedRecords else {
                    set(.offsetOutOfRange)
                    continue
                }
                remaining += 1
                position(connection, log, record: UInt64(partition.offset)) { [unowned self] found in
                    switch found {
                    case .failure(let error):
                        set(Self.kafkaError(error))
                        answer()
                    case .success(let position):
                        commitCursor(connection, log, name: request.groupID, position) { error in
                            set(error)
                            answer()
                        }
                    }
                }
            }
        }
        answer()
    }

    /// Record `record` of `log` as a cursor position: its batch and its index there.
    private func position(_ connection: Connection, _ log: Log, record: UInt64, _ done: @escaping (Result<CursorPosition, StorageError>) -> Void) {
        if record >= log.committedRecords { return done(.success(CursorPosition(offset: log.committedEnd))) }
        find(connection, log, record: record) { found in
            done(found.map { CursorPosition(offset: $0.offset, index: UInt32(clamping: record >= $0.record ? record - $0.record : 0)) })
        }
    }

    private func commitCursor(_ connection: Connection, _ log: Log, name: String, _ position: CursorPosition, _ done: @escaping (KafkaErrorCode) -> Void) {
        guard connection.isOpen, let session = connection.kafka else { return done(.unknownServerError) }
        let token = session.register(.storage { answer in
            if case .cursor(.success) = answer { done(.none) } else if case .cursor(.failure(let error)) = answer { done(Self.kafkaError(error)) } else {
                done(.unknownServerError)
            }
        })
        switch store.commitCursor(log.id, name: name, position: position, expected: nil, context: ResponseContext.make(connection, sequence: token)) {
        case .failed(let error):
            _ = session.take(token)
            done(Self.kafkaError(error))
        case .pending:
            connection.storageRequestsInFlight += 1
        }
    }

    func offsetFetch(_ connection: Connection, _ session: KafkaSession, _ header: KafkaRequestHeader, _ request: KafkaOffsetFetchRequest) {
        let sequence = begin(connection)
        let asked: [KafkaTopic<Int32>] =
            request.topics
            ?? KafkaTopics.all(in: store).compactMap { topic in
                let committed = (0..<topic.partitions).filter { partition in
                    guard let log = KafkaTopics.log(topic.topic, partition, in: store), case .success = store.cursor(log.id, name: request.groupID)
                    else { return false }
                    return true
                }
                return committed.isEmpty ? nil : KafkaTopic(name: topic.topic, partitions: committed.map { Int32($0) })
            }
        var results = asked.map { topic in
            (topic: topic.name, partitions: topic.partitions.map { (index: $0, offset: Int64(-1), metadata: String?(""), errorCode: KafkaErrorCode.none) })
        }
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            if remaining == 0 { respond(connection, sequence, header, KafkaOffsetFetchRequest.responseBody(version: header.apiVersion, results)) }
        }
        guard KafkaGroupCoordinator.validGroup(request.groupID) else {
            respond(connection, sequence, header, KafkaOffsetFetchRequest.responseBody(version: header.apiVersion, [], errorCode: .invalidGroupId))
            return
        }
        for (topicIndex, topic) in asked.enumerated() {
            for (partitionIndex, partition) in topic.partitions.enumerated() {
                guard partition >= 0, KafkaTopics.problem(with: topic.name) == nil,
                    let log = KafkaTopics.log(topic.name, Int(partition), in: store),
                    case .success(let position) = store.cursor(log.id, name: request.groupID)
                else { continue }
                remaining += 1
                firstRecord(connection, log, at: position.offset) { found in
                    switch found {
                    case .success(let first): results[topicIndex].partitions[partitionIndex].offset = Int64(first.record + UInt64(position.index))
                    // Its batch was trimmed away: no usable commit (the client applies its reset policy).
                    case .failure(.offsetBelowStart): break
                    case .failure(let error): results[topicIndex].partitions[partitionIndex].errorCode = Self.kafkaError(error)
                    }
                    answer()
                }
            }
        }
        answer()
    }
}
