;;; e2e.el --- Drive Eglot against `starchat lsp' in `emacs --batch'  -*- lexical-binding: t -*-

;; Run by tests/editors/test_emacs.py, which asserts on the JSON this writes.
;; Environment:
;;   STARCHAT_TEST_MODE        "snippet": load editors/emacs/starchat-eglot.el (the docs);
;;                             "bare": only an `eglot-server-programs' entry, as a new user
;;   STARCHAT_TEST_SNIPPET     path of starchat-eglot.el
;;   STARCHAT_TEST_FILE        a Python file to explain
;;   STARCHAT_TEST_FIX_FILE    a broken Python file to fix
;;   STARCHAT_TEST_OUT         where the results go (JSON, rewritten after each scenario)
;;   STARCHAT_TEST_MAX_TOKENS  max_new_tokens for the quick answers
;; Eglot's own defaults stay: `jsonrpc-default-request-timeout' 10 s, edits confirmed.

;;; Code:

(require 'cl-lib)
(require 'json)
(require 'subr-x)
;; Debian's elpa-eglot needs the newer project/xref/seq next to it.
(dolist (dir (file-expand-wildcards "/usr/share/emacs/site-lisp/elpa/*"))
  (add-to-list 'load-path dir))
(require 'eglot)

(defvar e2e-results nil "Alist of (scenario . result alist).")
(defvar e2e-mode (getenv "STARCHAT_TEST_MODE"))
(defvar e2e-max-tokens (string-to-number (or (getenv "STARCHAT_TEST_MAX_TOKENS") "32")))
(defvar e2e-patience (string-to-number (or (getenv "STARCHAT_TEST_WAIT") "300"))
  "Seconds to wait for an answer: generous, only to avoid a hang.")
(defvar e2e-prompts nil "What Emacs asked the user (y-or-n-p), newest first.")
(defvar e2e-answers nil "Answers of workspace/executeCommand, newest first.")

(defun e2e-write ()
  (with-temp-file (getenv "STARCHAT_TEST_OUT")
    (insert (json-encode e2e-results))))

(defun e2e-record (name result)
  (setf (alist-get name e2e-results nil nil #'equal) result)
  (e2e-write))

(defun e2e-wait (predicate seconds)
  "Pump events until PREDICATE is true or SECONDS pass; return its value."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    value))

(defmacro e2e-scenario (name &rest body)
  "Run BODY, recording its alist (plus ok) or the error under NAME."
  (declare (indent 1))
  `(e2e-record ,name
               (condition-case err
                   (append '((ok . t)) (progn ,@body))
                 (error `((ok . :json-false) (error . ,(error-message-string err)))))))

;; The user's answers: yes to "Server wants to edit ... Proceed?", a pick in the menu.
(defvar e2e-pick nil "Title the code-action menu picks.")
(advice-add 'y-or-n-p :around
            (lambda (_orig prompt) (push prompt e2e-prompts) t))
(defun e2e-completing-read (_prompt collection &rest _)
  (let ((titles (mapcar (lambda (c) (if (consp c) (car c) c)) collection)))
    (or (cl-find e2e-pick titles :test #'equal)
        (error "No menu item %S in %S" e2e-pick titles))))
(advice-add 'eglot-execute-command :filter-return
            (lambda (answer) (push answer e2e-answers) answer))

(if (equal e2e-mode "snippet")
    (progn
      (setq starchat-initialization-options
            `(:starchat (:generation (:max_new_tokens ,e2e-max-tokens))))
      (load (getenv "STARCHAT_TEST_SNIPPET") nil t))
  ;; What a new user writes (README: "any LSP editor"), plus short answers.
  (add-to-list 'eglot-server-programs
               `(python-mode . ("starchat" "lsp" :initializationOptions
                                (:starchat (:generation (:max_new_tokens ,e2e-max-tokens)))))))

(defun e2e-region-of-lines (first last)
  "Region from the start of line FIRST to the end of line LAST (1-based)."
  (goto-char (point-min))
  (forward-line (1- first))
  (let ((beg (point)))
    (forward-line (- last first))
    (list beg (line-end-position))))

(defun e2e-menu (title beg end)
  "Pick TITLE in Eglot's code-action menu on BEG..END, as a user would.
Returns (SECONDS . ERROR-OR-NIL) of the call; it ends when the server answers."
  (let ((e2e-pick title)
        (last-nonmenu-event 13)         ; a key, not a mouse click: the minibuffer menu
        (started (float-time))
        error)
    (cl-letf (((symbol-function 'completing-read) #'e2e-completing-read))
      (condition-case err
          (eglot-code-actions beg end nil t)
        (error (setq error (error-message-string err)))))
    (cons (- (float-time) started) error)))

(defun e2e-file-answer (file)
  "The text after the last \"## StarChat\" heading of a conversation FILE, or nil."
  (when (file-readable-p file)
    (with-temp-buffer
      (insert-file-contents file)
      (goto-char (point-max))
      (when (search-backward "## StarChat\n\n" nil t)
        (buffer-substring-no-properties (match-end 0) (point-max))))))

(defun e2e-strip-state (text)
  "TEXT without the server's state line (still writing, stopped) at its end."
  (and text (replace-regexp-in-string "\n*_\\[[^]\n]*\\]_\n*\\'" "" text)))

(defun e2e-uri-file (uri) (and uri (eglot--uri-to-path uri)))

(defvar e2e-source (find-file-noselect (getenv "STARCHAT_TEST_FILE")))
(defvar e2e-fix (find-file-noselect (getenv "STARCHAT_TEST_FIX_FILE")))

(e2e-scenario "attach"
  (with-current-buffer e2e-source
    (apply #'eglot (eglot--guess-contact))
    (let ((server (e2e-wait #'eglot-current-server 60)))
      (unless server (error "Eglot did not connect"))
      (with-current-buffer e2e-fix (eglot--maybe-activate-editing-mode))
      `((major_mode . ,(symbol-name major-mode))
        (managed . ,(if (eglot-managed-p) t :json-false))
        (server_name . ,(plist-get (eglot--server-info server) :name))
        (commands . ,(plist-get (plist-get (eglot--capabilities server)
                                           :executeCommandProvider)
                                :commands))))))

(e2e-scenario "actions"
  (with-current-buffer e2e-source
    (let* ((region (e2e-region-of-lines 4 6))
           (actions (eglot-code-actions (car region) (cadr region))))
      `((titles . ,(vconcat (mapcar (lambda (a) (plist-get a :title)) actions)))))))

(when (equal e2e-mode "bare")
 (e2e-scenario "fix"
  (with-current-buffer e2e-fix
    (let* ((before (buffer-string))
           (region (list (point-min) (point-max)))
           (call (e2e-menu "StarChat: Fix selection" (car region) (cadr region)))
           (answer (car e2e-answers))
           (changed (e2e-wait (lambda () (not (equal (buffer-string) before))) e2e-patience)))
      `((call_seconds . ,(car call))
        (call_error . ,(cdr call))
        (timeout . ,jsonrpc-default-request-timeout)
        (answer . ,answer)
        (changed . ,(if changed t :json-false))
        (prompts . ,(vconcat e2e-prompts))
        (before . ,before)
        (after . ,(buffer-string)))))))

(defun e2e-messages ()
  (with-current-buffer (messages-buffer) (buffer-string)))

(e2e-scenario "explain"
  (with-current-buffer e2e-source
    (let* ((region (e2e-region-of-lines 4 6))
           (messages-before (length (e2e-messages)))
           (call (e2e-menu "StarChat: Explain selection" (car region) (cadr region)))
           (answer (car e2e-answers))
           (file (e2e-uri-file (plist-get answer :document)))
           (done-marker "_[StarChat is still writing")
           buffer-text shown)
      (if (equal e2e-mode "snippet")
          ;; The server opened the document; the buffer must end up with the whole answer.
          (e2e-wait (lambda ()
                      (let ((buffer (and file (find-buffer-visiting file))))
                        (when buffer
                          (setq shown t)
                          (setq buffer-text (with-current-buffer buffer
                                              (buffer-substring-no-properties
                                               (point-min) (point-max))))
                          (not (string-search done-marker buffer-text)))))
                    e2e-patience)
        ;; Without the snippet: the answer comes as a message (echo area, *Messages*).
        (e2e-wait (lambda () (string-search "StarChat: Explain selection (also in"
                                            (substring (e2e-messages) messages-before)))
                  e2e-patience))
      `((call_seconds . ,(car call))
        (call_error . ,(cdr call))
        (answer . ,answer)
        (shown . ,(if shown t :json-false))
        (auto_revert . ,(if (and file (find-buffer-visiting file)
                                 (buffer-local-value 'auto-revert-mode
                                                     (find-buffer-visiting file)))
                            t :json-false))
        (buffer_text . ,buffer-text)
        (file_answer . ,(and file (e2e-file-answer file)))
        (messages . ,(substring (e2e-messages) messages-before))))))

(when (equal e2e-mode "snippet")
  (e2e-scenario "cancel"
    (with-current-buffer e2e-source
      (let ((server (eglot-current-server)))
        ;; A long answer, so that there is something to stop.
        (jsonrpc-notify server :workspace/didChangeConfiguration
                        '(:settings (:starchat (:generation (:max_new_tokens 400)))))
        (let* ((started (float-time))
               (answer (eglot-execute-command
                        server 'starchat.chat
                        (vector '(:message "Write a long story about a robot who learns to paint."))))
               (call-seconds (- (float-time) started))
               (file (e2e-uri-file (plist-get answer :document)))
               (got-text (e2e-wait (lambda () (let ((text (e2e-file-answer file)))
                                                (and text (string-search "still writing" text)
                                                     (> (length (e2e-strip-state text)) 0))))
                                   e2e-patience))
               (at-cancel (e2e-file-answer file)))
          (starchat-cancel)
          (let* ((stopped (e2e-wait (lambda () (string-search "_[stopped]_"
                                                              (or (e2e-file-answer file) "")))
                                    30))
                 (after-stop (e2e-file-answer file)))
            ;; Nothing may be written after the stop.
            (e2e-wait #'ignore 2)
            (jsonrpc-notify server :workspace/didChangeConfiguration
                            `(:settings (:starchat (:generation (:max_new_tokens ,e2e-max-tokens)))))
            ;; The worker is free again: the next answer completes.
            (let* ((next (eglot-execute-command
                          server 'starchat.chat (vector '(:message "Say hello."))))
                   (next-file (e2e-uri-file (plist-get next :document)))
                   (next-done (e2e-wait (lambda ()
                                          (let ((text (e2e-file-answer next-file)))
                                            (and text (not (string-search "still writing" text))
                                                 (not (string-search "_[" text)))))
                                        e2e-patience)))
              `((call_seconds . ,call-seconds)
                (answer . ,answer)
                (got_text . ,(if got-text t :json-false))
                (at_cancel . ,at-cancel)
                (stopped . ,(if stopped t :json-false))
                (after_stop . ,after-stop)
                (later . ,(e2e-file-answer file))
                (next_done . ,(if next-done t :json-false))
                (next_answer . ,(e2e-file-answer next-file))))))))))

(e2e-record "logs"
  ;; Eglot keeps the server's stderr and the JSON-RPC traffic in buffers: for failures.
  (cl-loop for buffer in (buffer-list)
           for name = (buffer-name buffer)
           when (string-match-p "EGLOT" name)
           collect (cons name (with-current-buffer buffer
                                (buffer-substring-no-properties
                                 (max (point-min) (- (point-max) 20000)) (point-max))))))

(e2e-scenario "shutdown"
  (let ((server (with-current-buffer e2e-source (eglot-current-server))))
    (eglot-shutdown server)
    `((stopped . ,(if (e2e-wait (lambda () (not (jsonrpc-running-p server))) 30)
                      t :json-false)))))

(kill-emacs 0)
;;; e2e.el ends here
