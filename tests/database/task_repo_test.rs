//! The specification's section 5 tests, as written there; `// ... other fields` is filled from
//! a full task with `..spec_task()`.

use crate::helpers::database::{setup_test_db, teardown_test_db};
use crate::helpers::spec_task;
use abathur::domain::models::{DependencyType, Task, TaskSource, TaskStatus};
use abathur::domain::ports::TaskRepository;
use abathur::infrastructure::database::TaskRepositoryImpl;
use chrono::Utc;
use uuid::Uuid;

#[tokio::test]
async fn test_insert_and_get_task() {
    let pool = setup_test_db().await;
    let repo = TaskRepositoryImpl::new(pool.clone());

    let task = Task {
        id: Uuid::new_v4(),
        summary: "Test task".to_string(),
        description: "Test description".to_string(),
        agent_type: "test-agent".to_string(),
        priority: 5,
        calculated_priority: 5.0,
        status: TaskStatus::Pending,
        dependencies: None,
        dependency_type: DependencyType::Sequential,
        dependency_depth: 0,
        input_data: None,
        result_data: None,
        error_message: None,
        retry_count: 0,
        max_retries: 3,
        max_execution_timeout_seconds: 3600,
        submitted_at: Utc::now(),
        started_at: None,
        completed_at: None,
        last_updated_at: Utc::now(),
        created_by: Some("test".to_string()),
        parent_task_id: None,
        session_id: None,
        source: TaskSource::Human,
        deadline: None,
        estimated_duration_seconds: None,
        feature_branch: None,
        task_branch: None,
        worktree_path: None,
    };

    // Insert task
    repo.insert(task.clone())
        .await
        .expect("failed to insert task");

    // Retrieve task
    let retrieved = repo.get(task.id).await.expect("failed to get task");

    assert!(retrieved.is_some());
    let retrieved = retrieved.unwrap();
    assert_eq!(retrieved.id, task.id);
    assert_eq!(retrieved.summary, task.summary);
    assert_eq!(retrieved.status, TaskStatus::Pending);

    teardown_test_db(pool).await;
}

#[tokio::test]
async fn test_update_task_status() {
    let pool = setup_test_db().await;
    let repo = TaskRepositoryImpl::new(pool.clone());

    let task = Task {
        id: Uuid::new_v4(),
        summary: "Test task".to_string(),
        status: TaskStatus::Pending,
        ..spec_task()
    };

    repo.insert(task.clone()).await.expect("failed to insert");
    repo.update_status(task.id, TaskStatus::Running)
        .await
        .expect("failed to update status");

    let updated = repo.get(task.id).await.expect("failed to get").unwrap();
    assert_eq!(updated.status, TaskStatus::Running);

    teardown_test_db(pool).await;
}

#[tokio::test]
async fn test_get_ready_tasks() {
    let pool = setup_test_db().await;
    let repo = TaskRepositoryImpl::new(pool.clone());

    // Insert multiple tasks with different statuses and priorities
    for i in 0..5 {
        let task = Task {
            id: Uuid::new_v4(),
            summary: format!("Task {}", i),
            priority: i,
            calculated_priority: i as f64,
            status: if i % 2 == 0 {
                TaskStatus::Ready
            } else {
                TaskStatus::Pending
            },
            ..spec_task()
        };
        repo.insert(task).await.expect("failed to insert");
    }

    let ready_tasks = repo
        .get_ready_tasks(10)
        .await
        .expect("failed to get ready tasks");

    assert_eq!(ready_tasks.len(), 3); // Tasks 0, 2, 4
                                      // Verify they're ordered by priority descending
    assert!(ready_tasks[0].calculated_priority >= ready_tasks[1].calculated_priority);

    teardown_test_db(pool).await;
}

#[tokio::test]
async fn test_foreign_key_constraint() {
    let pool = setup_test_db().await;
    let repo = TaskRepositoryImpl::new(pool.clone());

    let parent_id = Uuid::new_v4();
    let child = Task {
        id: Uuid::new_v4(),
        summary: "Child task".to_string(),
        parent_task_id: Some(parent_id),
        ..spec_task()
    };

    // Attempt to insert child without parent should fail
    let result = repo.insert(child).await;
    assert!(result.is_err()); // Foreign key constraint violation

    teardown_test_db(pool).await;
}
