import RingLogKafka
import RingLogStorage

/// Metadata, CreateTopics and DeleteTopics: topics are the logs `T.0` ... `T.(P-1)`
/// (`KafkaTopics`), created and deleted through the store like CREATE_LOG and DELETE_LOG.
extension KafkaDispatcher {
    // MARK: Creating and deleting

    /// Creates the logs of `topic` (partitions that exist already are kept); `done` runs once
    /// every log exists or one could not be made. Requests for a topic being created wait for
    /// the same creation.
    func createTopic(_ connection: Connection, _ topic: String, partitions: Int, _ done: @escaping (Result<Void, KafkaErrorCode>) -> Void) {
        if creating[topic] != nil {
            creating[topic]!.append(done)
            return
        }
        creating[topic] = [done]
        var remaining = partitions
        var failure: KafkaErrorCode?
        let finishOne: (Result<Void, StorageError>) -> Void = { [unowned self] result in
            if case .failure(let error) = result, case .logExists = error {
            } else if case .failure(let error) = result {
                failure = failure ?? Self.kafkaError(error)
                server.logger.warning("creating a Kafka topic's log failed", metadata: ["topic": "\(topic)", "error": "\(error)"])
            }
            remaining -= 1
            guard remaining == 0 else { return }
            // A log of that name that is not the topic's (a native log, or another topic's under
            // the same hash) is never taken for it.
            if failure == nil, (0..<partitions).contains(where: { KafkaTopics.log(topic, $0, in: store) == nil }) {
                failure = .invalidTopic
                server.logger.warning("a Kafka topic's log name is taken by a log that is not the topic's", metadata: ["topic": "\(topic)"])
            }
            server.counters.kafkaTopicsCreated += 1
            for waiting in creating.removeValue(forKey: topic) ?? [] { waiting(failure.map { .failure($0) } ?? .success(())) }
        }
        for partition in 0..<partitions {
            let name = KafkaTopics.logName(topic, partition)
            guard store.log(named: name) == nil, connection.isOpen, let session = connection.kafka else {
                finishOne(.success(()))
                continue
            }
            let token = session.register(.storage { answer in
                if case .created(let result) = answer { finishOne(result) } else { finishOne(.failure(.shuttingDown)) }
            })
            connection.storageRequestsInFlight += 1
            store.createLog(named: name, label: KafkaTopics.label(topic), context: ResponseContext.make(connection, sequence: token))
        }
    }

    private func deleteTopic(_ connection: Connection, _ topic: String, _ done: @escaping (KafkaErrorCode) -> Void) {
        let partitions = KafkaTopics.partitionCount(topic, in: store)
        guard partitions > 0, let session = connection.kafka else { return done(.unknownTopicOrPartition) }
        var remaining = partitions
        var failure: KafkaErrorCode?
        for partition in 0..<partitions {
            let token = session.register(.storage { [unowned self] answer in
                if case .deleted(.failure(let error)) = answer { failure = failure ?? Self.kafkaError(error) }
                remaining -= 1
                if remaining == 0 {
                    server.counters.kafkaTopicsDeleted += 1
                    done(failure ?? .none)
                }
            })
            connection.storageRequestsInFlight += 1
            store.deleteLog(named: KafkaTopics.logName(topic, partition), context: ResponseContext.make(connection, sequence: token))
        }
    }

    // MARK: Metadata

    func metadata(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaMetadataRequest) {
        let sequence = begin(connection)
        let names: [String] = request.topics ?? KafkaTopics.all(in: store).map(\.topic)
        var errors: [String: KafkaErrorCode] = [:]
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            guard remaining == 0 else { return }
            var topics: [KafkaMetadataResponse.Topic] = []
            for name in names {
                if let error = errors[name], error != .none {
                    topics.append(.init(errorCode: error, name: name, partitions: []))
                    continue
                }
                let count = KafkaTopics.partitionCount(name, in: store)
                guard count > 0 else {
                    topics.append(.init(errorCode: .unknownTopicOrPartition, name: name, partitions: []))
                    continue
                }
                topics.append(.init(name: name, partitions: (0..<count).map { .init(index: Int32($0), leader: 0) }))
            }
            let response = KafkaMetadataResponse(
                brokers: [.init(nodeID: 0, host: advertised.host, port: Int32(advertised.port))], clusterID: "ringlog", controllerID: 0, topics: topics)
            respond(connection, sequence, header, response.encode(version: header.apiVersion))
        }
        for name in Set(names) {
            if let problem = KafkaTopics.problem(with: name) {
                server.logger.debug("kafka topic refused", metadata: ["topic": "\(name)", "problem": "\(problem)"])
                errors[name] = .invalidTopic
                continue
            }
            guard KafkaTopics.partitionCount(name, in: store) == 0, settings.autoCreateTopics, request.allowAutoTopicCreation else { continue }
            remaining += 1
            createTopic(connection, name, partitions: settings.defaultPartitions) { result in
                if case .failure(let error) = result { errors[name] = error }
                answer()
            }
        }
        answer()
    }

    // MARK: CreateTopics and DeleteTopics

    func createTopics(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaCreateTopicsRequest) {
        let sequence = begin(connection)
        var results: [(name: String, errorCode: KafkaErrorCode, errorMessage: String?)] = request.topics.map { ($0.name, .none, nil) }
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            if remaining == 0 { respond(connection, sequence, header, KafkaCreateTopicsRequest.responseBody(version: header.apiVersion, results)) }
        }
        var seen: Set<String> = []
        for (index, topic) in request.topics.enumerated() {
            // -1: the broker's default (Kafka 2.4+).
            let partitions = topic.numPartitions == -1 && topic.assignments.isEmpty ? settings.defaultPartitions : Int(topic.numPartitions)
            if !seen.insert(topic.name).inserted {
                results[index] = (topic.name, .invalidRequest, "topic \(topic.name) is named twice in one request")
            } else if let problem = KafkaTopics.problem(with: topic.name) {
                results[index] = (topic.name, .invalidTopic, problem)
            } else if KafkaTopics.partitionCount(topic.name, in: store) > 0 || creating[topic.name] != nil {
                results[index] = (topic.name, .topicAlreadyExists, "topic \(topic.name) already exists")
            } else if !topic.assignments.isEmpty {
                results[index] = (topic.name, .invalidRequest, "manual replica assignment is not supported: RingLog is one broker")
            } else if partitions < 1 || partitions > Self.maxPartitions {
                results[index] = (topic.name, .invalidPartitions, "partitions must be 1 to \(Self.maxPartitions), not \(topic.numPartitions)")
            } else if topic.replicationFactor != -1 && topic.replicationFactor != 1 {
                results[index] = (topic.name, .invalidReplicationFactor, "replication factor \(topic.replicationFactor): this broker is alone (use 1 or -1)")
            } else if !request.validateOnly {
                remaining += 1
                createTopic(connection, topic.name, partitions: partitions) { result in
                    if case .failure(let error) = result { results[index] = (topic.name, error, "the topic's logs could not all be created") }
                    answer()
                }
            }
        }
        answer()
    }

    /// The most partitions one topic may have (each is a log with its own files).
    static let maxPartitions = 1024

    func deleteTopics(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaDeleteTopicsRequest) {
        let sequence = begin(connection)
        var results: [(name: String, errorCode: KafkaErrorCode)] = request.topicNames.map { ($0, .none) }
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            if remaining == 0 { respond(connection, sequence, header, KafkaDeleteTopicsRequest.responseBody(version: header.apiVersion, results)) }
        }
        for (index, name) in request.topicNames.enumerated() {
            if KafkaTopics.problem(with: name) != nil {
                results[index].errorCode = .invalidTopic
                continue
            }
            remaining += 1
            deleteTopic(connection, name) { error in
                results[index].errorCode = error
                answer()
            }
        }
        answer()
    }
}
