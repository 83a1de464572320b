package events

import "time"

// Database command, event and state types.
const (
	// TypeDBAdd runs a database instance on the addressed server with a first user and database.
	TypeDBAdd = "db.add"
	// TypeDBCreate adds a database (and its user, when new) on a running instance.
	TypeDBCreate = "db.create"
	// TypeDBDrop removes a database, and its owner with it when asked.
	TypeDBDrop = "db.drop"
	// TypeDBPasswd sets a user's password.
	TypeDBPasswd = "db.passwd"
	// TypeDBReveal seals a user's password to the asker (a query).
	TypeDBReveal = "db.reveal"
	// TypeDBInstanceDelete removes a database instance (its data only with Purge).
	TypeDBInstanceDelete = "dbinstance.delete"
	// TypeDBBackup takes a backup of a database into the server's backups store.
	TypeDBBackup = "db.backup"
	// TypeDBRestore restores a backup into a database.
	TypeDBRestore = "db.restore"
	// TypeDBBackedUp says a backup was taken, or failed.
	TypeDBBackedUp = "db.backedup"
	// TypeDBChanged says a database instance, database or user changed.
	TypeDBChanged = "db.changed"
	// TypeDBInstance is a database instance record.
	TypeDBInstance = "dbinstance"
)

func init() {
	registerCommand[DBAdd, DBInstance](TypeDBAdd, "Run a MariaDB or PostgreSQL instance in a container with a first user and database")
	registerCommand[DBCreate, DBInstance](TypeDBCreate, "Add a database (and its user when new) on a database instance")
	registerCommand[DBDrop, DBInstance](TypeDBDrop, "Remove a database from a database instance")
	registerCommand[DBPasswd, DBInstance](TypeDBPasswd, "Set a database user's password")
	registerCommand[DBReveal, Sealed](TypeDBReveal, "Seal a database user's password to the asker (a query)")
	registerCommand[DBInstanceRef, DBInstance](TypeDBInstanceDelete, "Remove a database instance")
	registerCommand[DBBackup, DBBackupInfo](TypeDBBackup, "Take a consistent backup of a database into the server's backups store")
	registerCommand[DBRestore, DBInstance](TypeDBRestore, "Restore a backup into a database")
	register[DBBackupEvent](TypeDBBackedUp, KindEvent, "A database backup was taken, or failed")
	register[DBChange](TypeDBChanged, KindEvent, "A database instance, database or user was added, changed or removed")
	registerState[DBInstance](TypeDBInstance, "skein_dbs", 0, "A database instance, kept in the databases bucket")
}

// Database kinds.
const (
	// DBMySQL is MariaDB, spoken to as MySQL.
	DBMySQL = "mysql"
	// DBPostgreSQL is PostgreSQL.
	DBPostgreSQL = "postgresql"
)

// DBAdd asks for a database instance with a first user owning a first database.
type DBAdd struct {
	// Name is the instance's name; "" picks KIND-N.
	Name string `json:"name,omitempty" valid:"name"`
	// Kind is mysql or postgresql.
	Kind string `json:"kind" jsonschema:"enum=mysql,enum=postgresql"`
	// User is the first user.
	User string `json:"user" valid:"dbident"`
	// DB is the first database, owned by User.
	DB string `json:"db" valid:"dbident"`
	// Allow are the networks clients may connect from.
	Allow []string `json:"allow" valid:"cidr" jsonschema:"maxItems=32"`
	// Password is User's password, sealed to the server's agent.
	Password Sealed `json:"password"`
}

// DBCreate adds a database owned by a user on a running instance; the user is
// made when new (then Password is required).
type DBCreate struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// User owns the database.
	User string `json:"user" valid:"dbident"`
	// DB is the database.
	DB string `json:"db" valid:"dbident"`
	// Password is a new user's password, sealed to the server's agent.
	Password *Sealed `json:"password,omitempty"`
}

// DBDrop removes a database from an instance.
type DBDrop struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// DB is the database.
	DB string `json:"db" valid:"dbident"`
	// User removes its owner too, when it owns no other database.
	User bool `json:"user,omitempty"`
}

// DBPasswd sets a user's password.
type DBPasswd struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// User is the user.
	User string `json:"user" valid:"dbident"`
	// Password is the new password, sealed to the server's agent.
	Password Sealed `json:"password"`
}

// DBReveal asks for a user's password, sealed to the asker.
type DBReveal struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// User is the user.
	User string `json:"user" valid:"dbident"`
	// To is the public curve key the password is sealed to.
	To string `json:"to" valid:"xkey"`
}

// DBInstanceRef names a database instance.
type DBInstanceRef struct {
	// Name is the instance.
	Name string `json:"name" valid:"name"`
	// Purge deletes its data volume too; without it the data is kept for an
	// instance of the same name and kind.
	Purge bool `json:"purge,omitempty"`
}

// DBInstance is a database instance as skein knows it.
type DBInstance struct {
	Resource
	// Kind is mysql or postgresql.
	Kind string `json:"kind" jsonschema:"enum=mysql,enum=postgresql"`
	// Version is the server's version.
	Version string `json:"version,omitempty" valid:"text"`
	// Port is the port it listens on.
	Port int `json:"port"`
	// Allow are the networks clients may connect from.
	Allow []string `json:"allow" valid:"cidr"`
	// Volume is the storage volume its data lives on.
	Volume string `json:"volume,omitempty" valid:"name"`
	// Databases are its databases.
	Databases []DBDatabase `json:"databases"`
	// Users are its users.
	Users []DBUser `json:"users"`
	// Size is the size of its data directory in bytes, as last measured (every minute).
	Size int64 `json:"size,omitempty"`
	// Signed is who wrote the record (bus.Store signs and checks it).
	Signed
}

// DBDatabase is one database of an instance.
type DBDatabase struct {
	// Name is the database.
	Name string `json:"name" valid:"dbident"`
	// Owner is the user that owns it.
	Owner string `json:"owner" valid:"dbident"`
}

// DBUser is one user of an instance.
type DBUser struct {
	// Name is the user.
	Name string `json:"name" valid:"dbident"`
	// Password is its password, sealed to the instance's agent.
	Password Sealed `json:"password"`
}

// DBChange says what changed in a database instance (never a password).
type DBChange struct {
	// Instance is the instance.
	Instance string `json:"instance"`
	// Change is added, deleted, database-added, database-removed, password or restored.
	Change string `json:"change" jsonschema:"enum=added,enum=deleted,enum=database-added,enum=database-removed,enum=password,enum=restored"`
	// DB is the database concerned, if any.
	DB string `json:"db,omitempty"`
	// User is the user concerned, if any.
	User string `json:"user,omitempty"`
	// Cause is "reconcile" when the agent repaired the record from what runs.
	Cause string `json:"cause,omitempty" jsonschema:"enum=reconcile"`
}

// DBBackup asks for a backup of one database.
type DBBackup struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// DB is the database.
	DB string `json:"db" valid:"dbident"`
	// To is the admin's public backup key: the backup is sealed to it and to
	// the server's agent, and no one else can read it.
	To string `json:"to" valid:"xkey"`
}

// DBBackupInfo is a backup in a server's backups store.
type DBBackupInfo struct {
	// Name is the backup's name in the store: INSTANCE.DB.TIME.
	Name string `json:"name" valid:"backup"`
	// Bucket is the object store it is in.
	Bucket string `json:"bucket"`
	// Instance is the instance it was taken of.
	Instance string `json:"instance"`
	// DB is the database it was taken of.
	DB string `json:"db"`
	// Kind is mysql or postgresql.
	Kind string `json:"kind"`
	// Owner is the user that owned the database.
	Owner string `json:"owner"`
	// Server is the server it was taken on.
	Server string `json:"server"`
	// Size is its size in bytes, compressed.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the stored (compressed) dump.
	SHA256 string `json:"sha256"`
	// Taken is when it was taken.
	Taken time.Time `json:"taken"`
}

// DBRestore restores a backup of the instance's server's store into a database.
type DBRestore struct {
	// Instance is the database instance.
	Instance string `json:"instance" valid:"name"`
	// DB is the database restored into; made (owned by the backup's owner,
	// who must be a user of the instance) when it does not exist.
	DB string `json:"db" valid:"dbident"`
	// Backup is the backup's name in the instance's server's store.
	Backup string `json:"backup" valid:"backup"`
	// Replace drops what DB holds first; without it a restore into a
	// database that holds tables is refused.
	Replace bool `json:"replace,omitempty"`
}

// DBBackupEvent says a backup was taken or failed.
type DBBackupEvent struct {
	// Instance is the instance.
	Instance string `json:"instance"`
	// DB is the database.
	DB string `json:"db"`
	// Backup is the backup's name (taken only).
	Backup string `json:"backup,omitempty"`
	// Size is its compressed size (taken only).
	Size int64 `json:"size,omitempty"`
	// SHA256 is its checksum (taken only).
	SHA256 string `json:"sha256,omitempty"`
	// OK is false for a failed backup.
	OK bool `json:"ok"`
	// Error says why it failed.
	Error string `json:"error,omitempty"`
}
